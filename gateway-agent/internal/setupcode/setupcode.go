// Package setupcode is the gateway's setup code: a secret kept in the state
// directory and shown on the device only (in the agent's log at start and
// by `gateway-agent status`), which the setup page asks for before it
// changes the gateway's name, reclaims a name or sets the owner's email.
// Reaching the LAN is not enough to own the gateway: the code proves access
// to the device itself.
//
// The code is made at first start (10 characters of Crockford's base32, 50
// bits), or provided by whoever prepares the device: a file written before
// the first start (a code printed on the box's label) is used as it is. It
// is compared in constant time, and wrong guesses are rate limited per
// client and overall (Checker).
//
// It knows nothing of HTTP; the setup page calls Check.
package setupcode

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/state"
)

// FileName is the setup code's file in the state directory.
const FileName = "setup-code"

// alphabet is Crockford's base32: no I, L, O or U, so that a code read
// aloud or from a screen is typed right (Normalize maps the look-alikes).
const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// Length is the length of a generated code; MinLength of a provided one.
const (
	Length    = 10
	MinLength = 8
)

// Errors of Check and of the code file.
var (
	// ErrMissing: a change was asked for without a code.
	ErrMissing = errors.New("this change needs the gateway's setup code: `gateway-agent status` on the gateway shows it, and so does the agent's log")
	// ErrWrong: the code given is not the gateway's.
	ErrWrong = errors.New("the setup code is wrong")
	// ErrTooManyAttempts: too many wrong codes lately.
	ErrTooManyAttempts = errors.New("too many wrong setup codes: wait a minute and try again")
	// ErrInvalid: the code file holds no usable code.
	ErrInvalid = errors.New("invalid setup code")
)

// Normalize turns what a person typed into the code's canonical form:
// upper case, without spaces and hyphens, with O read as 0 and I, L as 1.
func Normalize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(s) {
		switch r {
		case ' ', '-', '\t':
			continue
		case 'O':
			r = '0'
		case 'I', 'L':
			r = '1'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Format writes a canonical code in groups of five, as shown to people.
func Format(code string) string {
	var parts []string
	for len(code) > 5 {
		parts = append(parts, code[:5])
		code = code[5:]
	}
	return strings.Join(append(parts, code), "-")
}

func valid(code string) bool {
	if len(code) < MinLength || len(code) > 64 {
		return false
	}
	for _, r := range code {
		if !strings.ContainsRune(alphabet, r) {
			return false
		}
	}
	return true
}

// Generate returns a new random code, canonical.
func Generate() string {
	b := make([]byte, Length)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	for i := range b {
		// 256 is a multiple of 32: no modulo bias.
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// Path is the code file of a state directory.
func Path(dir string) string { return filepath.Join(dir, FileName) }

// Read returns the canonical code of the state directory dir.
func Read(dir string) (string, error) {
	b, err := os.ReadFile(Path(dir))
	if err != nil {
		return "", fmt.Errorf("reading the setup code: %w", err)
	}
	code := Normalize(strings.TrimSpace(string(b)))
	if !valid(code) {
		return "", fmt.Errorf("%w: %s must hold at least %d characters of 0-9 and A-Z (without I, L, O, U)", ErrInvalid, Path(dir), MinLength)
	}
	return code, nil
}

// LoadOrCreate returns the code of the state directory dir, making one
// (file mode 0600) when there is none yet.
func LoadOrCreate(dir string) (string, error) {
	code, err := Read(dir)
	if !errors.Is(err, os.ErrNotExist) {
		return code, err
	}
	code = Generate()
	if err := state.WriteFileAtomic(Path(dir), []byte(Format(code)+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("saving the setup code: %w", err)
	}
	return code, nil
}

// Rates of wrong guesses. One client (an IPv4 address, an IPv6 /64) may
// guess wrong 5 times in a row, then once per 30 s; all clients together
// 20 times, then once per 5 s. Against a 50-bit code that is hopeless
// for a guesser, and the owner who mistyped waits at most 30 s.
const (
	clientBurst    = 5
	clientInterval = 30 * time.Second
	globalBurst    = 20
	globalInterval = 5 * time.Second
	// maxClients bounds the per-client table; past it, clients whose
	// allowance is whole again are forgotten first.
	maxClients = 1024
)

// Checker checks codes given to the setup page. Only wrong codes count
// against the limits, so the owner is not locked out by his own use; a
// flood of wrong guesses can delay him, never let the flood in.
type Checker struct {
	sum [sha256.Size]byte

	mu      sync.Mutex
	global  *rate.Limiter
	clients map[netip.Prefix]*rate.Limiter
	now     func() time.Time
}

// NewChecker checks against code (any form Normalize accepts).
func NewChecker(code string) *Checker {
	return &Checker{
		sum:     sha256.Sum256([]byte(Normalize(code))),
		global:  rate.NewLimiter(rate.Every(globalInterval), globalBurst),
		clients: map[netip.Prefix]*rate.Limiter{},
		now:     time.Now,
	}
}

// clientPrefix is the unit of the per-client limit: one IPv4 address, or
// an IPv6 /64 (a host picks addresses freely within its /64).
func clientPrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// Check reports whether given is the code, for a request from client.
func (c *Checker) Check(client netip.Addr, given string) error {
	given = Normalize(given)
	if given == "" {
		return ErrMissing
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	lim := c.clientLimiter(clientPrefix(client), now)
	// Refused before comparing: a guesser over the limit learns nothing,
	// not even from timing.
	if lim.TokensAt(now) < 1 || c.global.TokensAt(now) < 1 {
		return ErrTooManyAttempts
	}
	// Hashes have one length whatever was typed, and the comparison
	// takes the same time wherever they differ.
	sum := sha256.Sum256([]byte(given))
	if subtle.ConstantTimeCompare(sum[:], c.sum[:]) == 1 {
		return nil
	}
	lim.AllowN(now, 1)
	c.global.AllowN(now, 1)
	return ErrWrong
}

// clientLimiter returns p's limiter; the caller holds c.mu.
func (c *Checker) clientLimiter(p netip.Prefix, now time.Time) *rate.Limiter {
	if lim, ok := c.clients[p]; ok {
		return lim
	}
	if len(c.clients) >= maxClients {
		for q, lim := range c.clients {
			if lim.TokensAt(now) >= clientBurst {
				delete(c.clients, q)
			}
		}
		if len(c.clients) >= maxClients {
			// Every client is guessing: the global limit still holds.
			clear(c.clients)
		}
	}
	lim := rate.NewLimiter(rate.Every(clientInterval), clientBurst)
	c.clients[p] = lim
	return lim
}
