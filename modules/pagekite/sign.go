package pagekite

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // the kite's signature is SHA-1 by protocol; we cannot choose.
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strconv"
	"sync"
	"time"
)

// signLen is the length of a PageKite signature or token: 8 characters of
// salt then 28 hex digits of digest.
const signLen = 36

// ChallengeWindow is the life of one challenge window. A challenge is
// accepted in the window it was made in and the next one, as the original
// frontend does, so a kite always has at least one full window to answer.
const ChallengeWindow = 10 * time.Minute

// KiteSign computes a kite's signature of payload under secret with the
// given salt (the signature's first 8 characters): salt +
// sha1hex(secret + payload + salt)[:28]. Exported for tests and tools that
// play the kite.
func KiteSign(secret, payload, salt string) string {
	sum := sha1.Sum([]byte(secret + payload + salt)) //nolint:gosec // protocol-defined.
	return salt + hex.EncodeToString(sum[:])[:signLen-8]
}

// checkKiteSign reports whether sign is a valid signature of payload, in
// constant time with respect to the secret-derived part.
func checkKiteSign(secret, payload, sign string) bool {
	if len(sign) != signLen {
		return false
	}
	want := KiteSign(secret, payload, sign[:8])
	return subtle.ConstantTimeCompare([]byte(want), []byte(sign)) == 1
}

// challenger makes and checks the frontend tokens of X-PageKite-SignThis.
// A token is "t" + 7 random hex digits + 28 hex digits of an HMAC, under
// the server's key, of the window number, the kite's proto:domain:srand and
// the random part. So it needs no state to check, binds to the one kite it
// was issued for, and expires with its window. Accepted tokens are kept
// until they expire so that a signature seen on the (plain-text) wire cannot
// be replayed to open a second session.
type challenger struct {
	key []byte
	now func() time.Time

	mu   sync.Mutex
	used map[string]time.Time // token -> when it may be forgotten
}

func newChallenger(key []byte, now func() time.Time) *challenger {
	if len(key) == 0 {
		key = make([]byte, 32)
		_, _ = rand.Read(key)
	}
	if now == nil {
		now = time.Now
	}
	return &challenger{key: key, now: now, used: make(map[string]time.Time)}
}

func (c *challenger) window(t time.Time) int64 { return t.Unix() / int64(ChallengeWindow/time.Second) }

func (c *challenger) mac(window int64, id, random string) string {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte(strconv.FormatInt(window, 16)))
	m.Write([]byte{0})
	m.Write([]byte(id))
	m.Write([]byte{0})
	m.Write([]byte(random))
	return hex.EncodeToString(m.Sum(nil))[:signLen-8]
}

// issue returns a fresh token for the kite id ("proto:domain:srand").
func (c *challenger) issue(id string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	random := hex.EncodeToString(b[:])[:7]
	return "t" + random + c.mac(c.window(c.now()), id, random)
}

// valid reports whether tok was issued for id in the current or previous
// window.
func (c *challenger) valid(id, tok string) bool {
	if len(tok) != signLen || tok[0] != 't' {
		return false
	}
	w := c.window(c.now())
	ok := 0
	for _, win := range []int64{w, w - 1} {
		ok |= subtle.ConstantTimeCompare([]byte(c.mac(win, id, tok[1:8])), []byte(tok[8:]))
	}
	return ok == 1
}

// consume marks tok as spent; it reports false if it already was.
func (c *challenger) consume(tok string) bool {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, exp := range c.used {
		if now.After(exp) {
			delete(c.used, t)
		}
	}
	if _, seen := c.used[tok]; seen {
		return false
	}
	c.used[tok] = now.Add(2 * ChallengeWindow)
	return true
}
