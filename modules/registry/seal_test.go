package registry_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/sqlitestore"
)

func TestParseSealKey(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i * 7)
	}
	for _, s := range []string{hex.EncodeToString(key), base64.StdEncoding.EncodeToString(key),
		base64.RawURLEncoding.EncodeToString(key), " " + hex.EncodeToString(key) + "\n"} {
		got, err := registry.ParseSealKey(s)
		if err != nil || string(got) != string(key) {
			t.Errorf("ParseSealKey(%q) = %x, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "short", hex.EncodeToString(key[:31]), base64.StdEncoding.EncodeToString(append(key, 1))} {
		if _, err := registry.ParseSealKey(s); !errors.Is(err, registry.ErrBadSealKey) {
			t.Errorf("ParseSealKey(%q): %v, want ErrBadSealKey", s, err)
		}
	}
}

func TestSealerBindsName(t *testing.T) {
	s, err := registry.NewSealer(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	sealed := s.Seal("alpha", "the-token")
	if strings.Contains(string(sealed), "the-token") {
		t.Fatal("the seal shows the token")
	}
	if got, err := s.Open("alpha", sealed); err != nil || got != "the-token" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := s.Open("beta", sealed); !errors.Is(err, registry.ErrBadSeal) {
		t.Fatalf("opened under another name: %v", err)
	}
	other, _ := registry.NewSealer(append(make([]byte, 31), 1))
	if _, err := other.Open("alpha", sealed); !errors.Is(err, registry.ErrBadSeal) {
		t.Fatalf("opened under another key: %v", err)
	}
	for _, bad := range [][]byte{nil, sealed[:10], append(append([]byte{}, sealed[:len(sealed)-1]...), sealed[len(sealed)-1]^1)} {
		if _, err := s.Open("alpha", bad); !errors.Is(err, registry.ErrBadSeal) {
			t.Fatalf("opened a damaged seal: %v", err)
		}
	}
	if _, err := registry.NewSealer(make([]byte, 16)); !errors.Is(err, registry.ErrBadSealKey) {
		t.Fatalf("16-byte key: %v", err)
	}
}

// A gateway registered before the key existed gets its token sealed the
// next time it presents it; a reclamation moves the seal to the new token.
func TestKiteSecret(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "registry.db")
	store, err := sqlitestore.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })

	// Before: no key.
	plain := registry.New(store, registry.Config{}, nil)
	sub, err := plain.Subscribe(ctx, registry.SubscribeRequest{Name: "legacy"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.KiteSecret(ctx, "legacy"); !errors.Is(err, registry.ErrNoSealKey) {
		t.Fatalf("KiteSecret without a key: %v", err)
	}

	sealer, err := registry.NewSealer(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(store, registry.Config{Sealer: sealer, OnSealError: func(name string, err error) { t.Errorf("seal %s: %v", name, err) }}, nil)
	reg.Start()
	t.Cleanup(reg.Stop)
	if _, err := reg.KiteSecret(ctx, "legacy"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("KiteSecret of a token never presented since the key: %v", err)
	}
	if _, err := reg.Ping(ctx, sub.Token, netip.MustParseAddr("192.0.2.1"), nil); err != nil {
		t.Fatal(err)
	}
	if got, err := reg.KiteSecret(ctx, "legacy"); err != nil || got != sub.Token {
		t.Fatalf("KiteSecret after a ping = %q, %v", got, err)
	}

	fresh, err := reg.Subscribe(ctx, registry.SubscribeRequest{Name: "fresh"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := reg.KiteSecret(ctx, "fresh"); err != nil || got != fresh.Token {
		t.Fatalf("KiteSecret of a new gateway = %q, %v", got, err)
	}
	if _, err := reg.KiteSecret(ctx, "nosuch"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("KiteSecret of an unknown name: %v", err)
	}

	// A reclamation gives the name a new token: the seal follows it.
	if _, err := store.UpdateGateway(ctx, "fresh", func(g *registry.Gateway) (*string, error) {
		g.EmailVerified = true
		return ptr("owner@example.com"), nil
	}); err != nil {
		t.Fatal(err)
	}
	mails := &lastMail{}
	withMail := registry.New(store, registry.Config{Sealer: sealer}, mails)
	if err := withMail.ReclaimUUID(ctx, "fresh"); err != nil {
		t.Fatal(err)
	}
	reclaimed, err := withMail.Subscribe(ctx, registry.SubscribeRequest{Name: "fresh", ReclamationToken: strings.ToUpper(mails.token)})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := reg.KiteSecret(ctx, "fresh"); err != nil || got != reclaimed.Token || got == fresh.Token {
		t.Fatalf("KiteSecret after a reclamation = %q, %v; want the new token", got, err)
	}

	// A seal copied onto another gateway's row does not open there.
	h, sealed, err := store.SealedToken(ctx, "fresh")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.SealToken(ctx, "legacy", registry.HashToken(sub.Token), sealed); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.KiteSecret(ctx, "legacy"); !errors.Is(err, registry.ErrBadSeal) {
		t.Fatalf("KiteSecret with a seal moved from another gateway: %v (hash %x)", err, h)
	}
}

// Imported gateways keep the original server's UUID tokens.
func TestUUIDTokensAreTokens(t *testing.T) {
	if err := registry.CheckTokenSyntax("0d2f6c3e-8a7b-4c1d-9e0f-112233445566"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"0d2f6c3e-8a7b-4c1d-9e0f-11223344556", "0d2f6c3e+8a7b-4c1d-9e0f-112233445566", "zd2f6c3e-8a7b-4c1d-9e0f-112233445566"} {
		if registry.CheckTokenSyntax(bad) == nil {
			t.Errorf("%q passed as a token", bad)
		}
	}
	tok, h := registry.NewReclaimToken()
	if n, err := registry.NormalizeReclaimToken(" " + strings.ToUpper(tok) + "\t"); err != nil || n != tok || string(registry.HashToken(n)) != string(h) {
		t.Fatalf("NormalizeReclaimToken(upper %s) = %q, %v", tok, n, err)
	}
	if tok != strings.ToLower(tok) || tok[14] != '4' || !strings.ContainsRune("89ab", rune(tok[19])) {
		t.Fatalf("%s is not a lowercase version 4 UUID", tok)
	}
}

func ptr[T any](v T) *T { return &v }

// lastMail keeps the token of the last mail.
type lastMail struct{ token string }

func (m *lastMail) SendVerification(_ context.Context, _, _, token string) error {
	m.token = token
	return nil
}

func (m *lastMail) SendReclamation(_ context.Context, _, _, token string) error {
	m.token = token
	return nil
}
