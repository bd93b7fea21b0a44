package testtools

import "strings"

// SQLStatements splits an SQL script (a schema file kept in testdata) into
// its statements, for drivers that run one statement per call: on ";",
// without "--" comment lines and empty statements. It does not parse SQL:
// a ";" inside a string literal or a trigger body splits too.
func SQLStatements(script string) []string {
	var stmts []string
	for s := range strings.SplitSeq(script, ";") {
		var lines []string
		for l := range strings.SplitSeq(s, "\n") {
			if !strings.HasPrefix(strings.TrimSpace(l), "--") {
				lines = append(lines, l)
			}
		}
		if s := strings.TrimSpace(strings.Join(lines, "\n")); s != "" {
			stmts = append(stmts, s)
		}
	}
	return stmts
}
