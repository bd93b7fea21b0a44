package testtools

import (
	"slices"
	"testing"
)

func TestSQLStatements(t *testing.T) {
	script := "-- the schema\nCREATE TABLE a (x int);\n\n  -- indented comment\nCREATE INDEX a_x\n  ON a (x);\n;\n-- trailing comment\n"
	want := []string{"CREATE TABLE a (x int)", "CREATE INDEX a_x\n  ON a (x)"}
	if got := SQLStatements(script); !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := SQLStatements("-- nothing\n"); len(got) != 0 {
		t.Fatalf("comments only: %q", got)
	}
}
