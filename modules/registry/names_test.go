package registry_test

import (
	"errors"
	"testing"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// The names an ACME CA would refuse to certify are refused at
// registration: the attacker's xn--zz (invalid punycode), ab--cd (hyphens
// in positions 3-4) and a Cyrillic homograph of "apple".
func TestNamesFollowACMERules(t *testing.T) {
	n := registry.NewNames(nil)
	for _, name := range []string{
		"xn--zz",         // not punycode at all
		"ab--cd",         // RFC 5891 reserves positions 3-4 for IDNA
		"xn--pple-43d",   // "аpple": Cyrillic а with Latin pple
		"xn--ls8h",       // an emoji: no letter
		"xn--a",          // decodes to a control character
		"xn--bcher-kva-", // trailing hyphen (LDH)
		"xn--Bcher-kva",  // upper case is never the stored form
	} {
		if err := n.Check(name); !errors.Is(err, registry.ErrInvalidName) {
			t.Errorf("Check(%q) = %v, want ErrInvalidName", name, err)
		}
	}
	for _, name := range []string{
		"myhome",
		"a-b",
		"ab-cd",
		"xn--bcher-kva",    // bücher
		"xn--80ak6aa92e",   // all Cyrillic: one script, not mixed
		"xn--eckwd4c7c",    // Japanese katakana
		"xn--abc-mi4b2jxb", // Latin with kana, as Japanese writes it
		"gw-0123456789ab",
	} {
		if err := n.Check(name); err != nil {
			t.Errorf("Check(%q) = %v, want nil", name, err)
		}
	}
}
