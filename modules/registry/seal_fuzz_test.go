package registry_test

import (
	"strings"
	"testing"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// FuzzTokenInput feeds presented strings to every parser of tokens and
// keys: none may panic, and what NormalizeReclaimToken accepts is a
// lowercase token that CheckTokenSyntax accepts too. A seal that opens
// must be one this sealer made.
func FuzzTokenInput(f *testing.F) {
	tok, _ := registry.NewReclaimToken()
	f.Add(tok)
	f.Add(strings.ToUpper(tok))
	f.Add("0123456789abcdef0123456789abcdef0123456789a")
	f.Add("")
	sealer, err := registry.NewSealer(make([]byte, 32))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_ = registry.CheckTokenSyntax(s)
		_, _ = registry.ParseSealKey(s)
		if n, err := registry.NormalizeReclaimToken(s); err == nil {
			if n != strings.ToLower(n) || registry.CheckTokenSyntax(n) != nil {
				t.Fatalf("NormalizeReclaimToken(%q) = %q", s, n)
			}
		}
		if got, err := sealer.Open("name", []byte(s)); err == nil {
			t.Fatalf("a forged seal opened: %q", got)
		}
		if got, err := sealer.Open("name", sealer.Seal("name", s)); err != nil || got != s {
			t.Fatalf("round trip of %q: %q, %v", s, got, err)
		}
	})
}
