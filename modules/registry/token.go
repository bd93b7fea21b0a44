package registry

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
)

// TokenBytes is the entropy of every token Gatehouse issues.
const TokenBytes = 32

// ErrMalformedToken is returned for a token that cannot have been issued.
var ErrMalformedToken = errors.New("malformed token")

// NewToken returns a fresh random token (shown once to its owner) and the
// hash that is stored in its place.
func NewToken() (token string, hash []byte) {
	var b [TokenBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand never fails on supported platforms; a token from a
		// broken source must not be issued.
		panic("registry: crypto/rand failed: " + err.Error())
	}
	token = base64.RawURLEncoding.EncodeToString(b[:])
	return token, HashToken(token)
}

// HashToken returns the stored form of a token.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// CheckTokenSyntax rejects strings that cannot be a token before any lookup.
func CheckTokenSyntax(token string) error {
	if len(token) != base64.RawURLEncoding.EncodedLen(TokenBytes) {
		return ErrMalformedToken
	}
	if _, err := base64.RawURLEncoding.DecodeString(token); err != nil {
		return ErrMalformedToken
	}
	return nil
}

// TokenMatches compares a presented token with a stored hash in constant
// time. An empty stored hash matches nothing: that is what keeps an empty
// reclamation token from claiming a name that never asked for one.
func TokenMatches(token string, storedHash []byte) bool {
	if len(storedHash) != sha256.Size || token == "" {
		return false
	}
	return subtle.ConstantTimeCompare(HashToken(token), storedHash) == 1
}
