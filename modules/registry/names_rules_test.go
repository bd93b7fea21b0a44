package registry

import (
	"regexp"
	"testing"
)

// TestLabelRulesMatchRegexps checks the hand-written name rules against the
// regular expressions they replaced, on every string of up to four bytes
// over an alphabet with each class and its edges, and on longer samples.
func TestLabelRulesMatchRegexps(t *testing.T) {
	nameRE := regexp.MustCompile(`^([a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])$`)
	nsNameRE := regexp.MustCompile(`^ns[0-9]+$`)
	check := func(s string) {
		t.Helper()
		if got, want := isLabel(s), nameRE.MatchString(s); got != want {
			t.Errorf("isLabel(%q) = %v, the regexp says %v", s, got, want)
		}
		if got, want := isNSName(s), nsNameRE.MatchString(s); got != want {
			t.Errorf("isNSName(%q) = %v, the regexp says %v", s, got, want)
		}
	}
	alphabet := []byte("an sz09-A.\n_`{/:\x00\xff")
	var gen func(prefix []byte, depth int)
	gen = func(prefix []byte, depth int) {
		check(string(prefix))
		if depth == 0 {
			return
		}
		for _, c := range alphabet {
			gen(append(prefix, c), depth-1)
		}
	}
	gen(nil, 4)
	for _, s := range []string{"ns1234567890", "ns12a", "gateway-1", "my--name", "xn--bcher-kva", "a-b-c-d-e", "ns", "n1", "Ns1", "ns1-"} {
		check(s)
	}
}
