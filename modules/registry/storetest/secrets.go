package storetest

import (
	"bytes"
	"errors"
	"testing"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// A seal counts only while it is of the gateway's current token, and
// leaves with the gateway.
func testSealedTokens(t *testing.T, s registry.Store) {
	ctx := t.Context()
	g := create(t, s, newGateway("sealed"), "")
	create(t, s, newGateway("other"), "")
	if _, _, err := s.SealedToken(ctx, "sealed"); !isNotFound(err) {
		t.Fatalf("SealedToken before any seal: %v, want ErrNotFound", err)
	}
	wantErr(t, "seal with another gateway's token hash", s.SealToken(ctx, "sealed", hash("token-other"), []byte("x")), registry.ErrNotFound)
	wantErr(t, "seal of an unknown gateway", s.SealToken(ctx, "nosuch", hash("token-nosuch"), []byte("x")), registry.ErrNotFound)
	if err := s.SealToken(ctx, "sealed", g.TokenHash, []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := s.SealToken(ctx, "sealed", g.TokenHash, []byte("second")); err != nil {
		t.Fatalf("a second seal of the same token: %v", err)
	}
	h, sealed, err := s.SealedToken(ctx, "sealed")
	if err != nil || !bytes.Equal(h, g.TokenHash) || string(sealed) != "second" {
		t.Fatalf("SealedToken = %x %q %v, want the second seal", h, sealed, err)
	}
	if _, _, err := s.SealedToken(ctx, "other"); !isNotFound(err) {
		t.Fatalf("another gateway's seal: %v, want ErrNotFound", err)
	}

	// A new token (a reclamation) kills the old seal; a late seal of the
	// old token is refused.
	if _, err := s.UpdateGateway(ctx, "sealed", func(g *registry.Gateway) (*string, error) {
		g.TokenHash = hash("new-token")
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.SealedToken(ctx, "sealed"); !isNotFound(err) {
		t.Fatalf("seal of a replaced token: %v, want ErrNotFound", err)
	}
	wantErr(t, "late seal of the old token", s.SealToken(ctx, "sealed", g.TokenHash, []byte("late")), registry.ErrNotFound)
	if err := s.SealToken(ctx, "sealed", hash("new-token"), []byte("new")); err != nil {
		t.Fatal(err)
	}
	if _, sealed, err := s.SealedToken(ctx, "sealed"); err != nil || string(sealed) != "new" {
		t.Fatalf("seal of the new token: %q %v", sealed, err)
	}

	// Deleted and registered again with the same token: no seal survives.
	if err := s.DeleteGateway(ctx, "sealed"); err != nil {
		t.Fatal(err)
	}
	g2 := newGateway("sealed")
	g2.TokenHash = hash("new-token")
	create(t, s, g2, "")
	if _, _, err := s.SealedToken(ctx, "sealed"); !isNotFound(err) {
		t.Fatalf("seal after delete and re-create: %v, want ErrNotFound", err)
	}
}

func isNotFound(err error) bool { return errors.Is(err, registry.ErrNotFound) }
