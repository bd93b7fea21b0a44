package registry

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"
)

// SealKeyBytes is the length of the key that seals gateways' tokens.
const SealKeyBytes = chacha20poly1305.KeySize

// Errors of sealed tokens.
var (
	// ErrNoSealKey: this cloud has no token_seal_key, so it keeps no
	// token it could sign with (PageKite stays off).
	ErrNoSealKey = errors.New("no token seal key configured")
	// ErrBadSealKey: the configured key is not 32 bytes in base64 or hex.
	ErrBadSealKey = errors.New("token seal key must be 32 bytes, base64 or hex")
	// ErrBadSeal: a stored seal does not open under the key and name.
	ErrBadSeal = errors.New("sealed token does not open")
)

// sealAD prefixes the associated data, so that a seal made for another use
// of the same key never opens as a token.
const sealAD = "gatehouse token seal v1\x00"

// Sealer seals gateways' tokens with XChaCha20-Poly1305. The gateway's name
// is the associated data: a seal copied onto another row does not open.
// Its random 24-byte nonces cannot repeat in practice, whatever the number
// of tokens sealed under one key.
type Sealer struct {
	aead cipher.AEAD
}

// ParseSealKey decodes a 32-byte key given as hex or base64 (standard or
// URL alphabet, padded or not).
func ParseSealKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if b, err := hex.DecodeString(s); err == nil && len(b) == SealKeyBytes {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == SealKeyBytes {
			return b, nil
		}
	}
	return nil, ErrBadSealKey
}

// NewSealer returns a Sealer under key (SealKeyBytes long).
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != SealKeyBytes {
		return nil, ErrBadSealKey
	}
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("token seal: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal returns nonce || ciphertext of token, bound to name.
func (s *Sealer) Seal(name, token string) []byte {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(token)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic("registry: crypto/rand failed: " + err.Error())
	}
	return s.aead.Seal(nonce, nonce, []byte(token), []byte(sealAD+name))
}

// Open returns the token sealed for name, or ErrBadSeal.
func (s *Sealer) Open(name string, sealed []byte) (string, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return "", ErrBadSeal
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(sealAD+name))
	if err != nil {
		return "", ErrBadSeal
	}
	return string(plain), nil
}

// KiteSecret returns the named gateway's current token, unsealed: what a
// PageKite frontend signs its challenges with. ErrNoSealKey without a key;
// ErrNotFound when the gateway is unknown or has not presented its
// current token since sealing began.
func (r *Registry) KiteSecret(ctx context.Context, name string) (string, error) {
	if r.cfg.Sealer == nil {
		return "", ErrNoSealKey
	}
	hash, sealed, err := r.store.SealedToken(ctx, name)
	if err != nil {
		return "", err
	}
	token, err := r.cfg.Sealer.Open(name, sealed)
	if err != nil {
		return "", fmt.Errorf("gateway %s: %w", name, err)
	}
	// The hash row is not under the AEAD: check that the seal is of the
	// token the hash names, so that a row edited in the database cannot
	// pair one gateway's hash with another token.
	if subtle.ConstantTimeCompare(HashToken(token), hash) != 1 {
		return "", fmt.Errorf("gateway %s: %w", name, ErrBadSeal)
	}
	return token, nil
}

// ensureSealed seals token for g when g's current seal is not known to be
// of this token. Pings repeat every hour per gateway, so the answer is
// remembered: a sealed gateway costs a map lookup, not a query.
func (r *Registry) ensureSealed(ctx context.Context, g *Gateway, token string) {
	if r.cfg.Sealer == nil || g == nil || len(g.TokenHash) < 8 {
		return
	}
	// The cache keeps 8 bytes of the hash: enough to notice a new token,
	// at a fraction of the memory per gateway. It is no secret (the
	// token is already authenticated), so a plain comparison does.
	mark := binary.BigEndian.Uint64(g.TokenHash)
	if m, ok := r.sealed.Load(g.Name); ok && m.(uint64) == mark {
		return
	}
	if h, _, err := r.store.SealedToken(ctx, g.Name); err == nil && subtle.ConstantTimeCompare(h, g.TokenHash) == 1 {
		r.sealed.Store(g.Name, mark)
		return
	}
	err := r.store.SealToken(ctx, g.Name, g.TokenHash, r.cfg.Sealer.Seal(g.Name, token))
	if err != nil {
		// Not the caller's failure: the token is sealed the next time it
		// is presented.
		if r.cfg.OnSealError != nil {
			r.cfg.OnSealError(g.Name, err)
		}
		return
	}
	r.sealed.Store(g.Name, mark)
}
