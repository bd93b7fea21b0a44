package registry

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
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

// CheckTokenSyntax rejects strings that cannot be a token before any lookup:
// ours (32 bytes, base64url), or a UUID, the form of the tokens of gateways
// imported from the original registration server (hashed as presented).
func CheckTokenSyntax(token string) error {
	if isUUID(token) {
		return nil
	}
	if len(token) != base64.RawURLEncoding.EncodedLen(TokenBytes) {
		return ErrMalformedToken
	}
	if _, err := base64.RawURLEncoding.DecodeString(token); err != nil {
		return ErrMalformedToken
	}
	return nil
}

// NewReclaimToken returns a fresh reclamation token and its stored hash. It
// is a lowercase random (version 4) UUID, because the WebThings gateway's
// setup page accepts nothing else in its reclamation field.
func NewReclaimToken() (token string, hash []byte) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("registry: crypto/rand failed: " + err.Error())
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 9562 variant
	h := hex.EncodeToString(b[:])
	token = h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
	return token, HashToken(token)
}

// NormalizeReclaimToken returns the form of a presented reclamation token
// that is hashed: trimmed and lowercased, as the original server's tokens
// were compared whatever case the user typed them in. ErrMalformedToken for
// anything that is no UUID.
func NormalizeReclaimToken(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if !isUUID(s) {
		return "", ErrMalformedToken
	}
	return s, nil
}

// normalizeReclaimToken accepts a reclamation token of either form: a UUID
// (the compatible surface's) is lowercased, one of ours taken as it is.
func normalizeReclaimToken(s string) (string, error) {
	if t, err := NormalizeReclaimToken(s); err == nil {
		return t, nil
	}
	if len(s) != base64.RawURLEncoding.EncodedLen(TokenBytes) || CheckTokenSyntax(s) != nil {
		return "", ErrMalformedToken
	}
	return s, nil
}

// isUUID reports whether s is a UUID in its 8-4-4-4-12 hex text form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
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
