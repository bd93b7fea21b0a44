package setupcode

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

func TestLoadOrCreate(t *testing.T) {
	dir := t.TempDir()
	code, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(code) != Length || Normalize(code) != code {
		t.Fatalf("generated %q", code)
	}
	fi, err := os.Stat(Path(dir))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("code file: %v %v", fi, err)
	}
	again, err := LoadOrCreate(dir)
	if err != nil || again != code {
		t.Fatalf("second start: %q %v, want %q", again, err, code)
	}
	if read, err := Read(dir); err != nil || read != code {
		t.Fatalf("Read: %q %v", read, err)
	}
	if other, _ := LoadOrCreate(t.TempDir()); other == code {
		t.Fatal("two gateways got the same code")
	}
}

// A code written before the first start (the box's label) is the code.
func TestProvidedCode(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(Path(dir), []byte("  abcd-efgh-jk\n"), 0o600)
	if code, err := LoadOrCreate(dir); err != nil || code != "ABCDEFGHJK" {
		t.Fatalf("provided code: %q %v", code, err)
	}
	for _, bad := range []string{"short", "ABCDEFGH!", "ÄBCDEFGHJK", ""} {
		os.WriteFile(Path(dir), []byte(bad), 0o600)
		if _, err := LoadOrCreate(dir); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestNormalizeFormat(t *testing.T) {
	for in, want := range map[string]string{"abcde-fghjk": "ABCDEFGHJK", "0O1IL": "00111", " ab cd\t": "ABCD"} {
		if got := Normalize(in); got != want {
			t.Errorf("Normalize(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Format("ABCDEFGHJK"); got != "ABCDE-FGHJK" {
		t.Errorf("Format: %q", got)
	}
}

// The guesser's side: wrong codes are refused, then refused before any
// comparison once over the limit, even the right one; the owner on another
// address is not locked out; the allowance comes back with time.
func TestCheckerLimitsGuesses(t *testing.T) {
	c := NewChecker("ABCDE-FGHJK")
	now := time.Now()
	c.now = func() time.Time { return now }
	attacker, owner := netip.MustParseAddr("192.168.1.66"), netip.MustParseAddr("192.168.1.10")
	if err := c.Check(owner, ""); !errors.Is(err, ErrMissing) {
		t.Fatalf("no code: %v", err)
	}
	if err := c.Check(owner, "abcde fghjk"); err != nil {
		t.Fatalf("the right code typed loosely: %v", err)
	}
	for i := range clientBurst {
		if err := c.Check(attacker, "AAAAAAAAA"+string(rune('0'+i))); !errors.Is(err, ErrWrong) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	if err := c.Check(attacker, "ABCDEFGHJK"); !errors.Is(err, ErrTooManyAttempts) {
		t.Fatalf("the right code over the limit: %v", err)
	}
	if err := c.Check(owner, "ABCDEFGHJK"); err != nil {
		t.Fatalf("the owner after the attacker's guesses: %v", err)
	}
	now = now.Add(clientInterval)
	if err := c.Check(attacker, "ABCDEFGHJK"); err != nil {
		t.Fatalf("after waiting: %v", err)
	}
}

// Many addresses (one host's IPv6 /64, or a whole LAN) share the limits.
func TestCheckerLimitsAcrossAddresses(t *testing.T) {
	c := NewChecker("ABCDEFGHJK")
	now := time.Now()
	c.now = func() time.Time { return now }
	for i := range clientBurst {
		a := netip.MustParseAddr("fd00::1:0:0:" + string(rune('a'+i)))
		c.Check(a, "WRONGWRONG")
	}
	if err := c.Check(netip.MustParseAddr("fd00::1:0:0:ff"), "ABCDEFGHJK"); !errors.Is(err, ErrTooManyAttempts) {
		t.Fatalf("same /64: %v", err)
	}
	var last error
	for i := range globalBurst {
		last = c.Check(netip.AddrFrom4([4]byte{10, 0, byte(i), 1}), "WRONGWRONG")
	}
	if !errors.Is(last, ErrTooManyAttempts) {
		t.Fatalf("global limit: %v", last)
	}
	if err := c.Check(netip.MustParseAddr("10.9.9.9"), "ABCDEFGHJK"); !errors.Is(err, ErrTooManyAttempts) {
		t.Fatalf("a fresh address past the global limit: %v", err)
	}
}

// FuzzCheck: whatever is typed, Normalize is idempotent, Check never
// panics, and only the code itself passes.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{"ABCDE-FGHJK", "abcde fghjk", "", "-", "ÄÖ", strings.Repeat("A", 100), "o0iIlL"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := Normalize(s)
		if Normalize(n) != n {
			t.Fatalf("Normalize not idempotent on %q", s)
		}
		c := NewChecker("ABCDE-FGHJK")
		err := c.Check(netip.MustParseAddr("192.0.2.1"), s)
		if (err == nil) != (n == "ABCDEFGHJK") {
			t.Fatalf("%q: %v", s, err)
		}
	})
}
