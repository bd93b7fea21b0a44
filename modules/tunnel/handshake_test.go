package tunnel

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestHandshake(t *testing.T) {
	errDB := errors.New("database on fire")
	tests := []struct {
		name       string
		auth       error
		wantReason string // empty: accepted
	}{
		{"accepted", nil, ""},
		{"refused with reason", &RefusedError{Reason: "unknown gateway"}, "unknown gateway"},
		{"wrapped refusal", errors.Join(errors.New("lookup"), &RefusedError{Reason: "token revoked"}), "token revoked"},
		{"internal error stays inside", errDB, ReasonAuthFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, cc := wsPair(t)
			type result struct {
				h   Handshake
				err error
			}
			done := make(chan result, 1)
			go func() {
				h, err := ServerHandshake(context.Background(), sc, func(_ context.Context, name, key string) error {
					if name != "myhome" || key != "tok" {
						t.Errorf("authenticate(%q, %q)", name, key)
					}
					return tt.auth
				})
				done <- result{h, err}
			}()
			err := ClientHandshake(testCtx(t), cc, "myhome", "tok")
			r := <-done
			if tt.wantReason == "" {
				if err != nil || r.err != nil {
					t.Fatalf("client %v, server %v", err, r.err)
				}
				if r.h.Name != "myhome" || r.h.Version != ProtocolVersion {
					t.Fatalf("server got %#v", r.h)
				}
				return
			}
			var re *RefusedError
			if !errors.As(err, &re) || re.Reason != tt.wantReason {
				t.Fatalf("client error %v, want refusal %q", err, tt.wantReason)
			}
			if !errors.Is(r.err, ErrRefused) || !errors.Is(r.err, tt.auth) {
				t.Fatalf("server error %v should wrap ErrRefused and %v", r.err, tt.auth)
			}
			if strings.Contains(err.Error(), errDB.Error()) {
				t.Fatal("internal error leaked to the agent")
			}
		})
	}
}

func TestServerHandshakeRejects(t *testing.T) {
	tests := []struct {
		name   string
		first  Message
		reason string
	}{
		{"future version", Handshake{Name: "a", Key: "b", Version: ProtocolVersion + 1}, ReasonUnsupportedVersion},
		{"not a handshake", Ping{Nonce: 1}, "expected a handshake"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, cc := wsPair(t)
			errc := make(chan error, 1)
			go func() {
				_, err := ServerHandshake(context.Background(), sc, func(context.Context, string, string) error {
					t.Error("authenticate called")
					return nil
				})
				errc <- err
			}()
			peer := rawPeer{t, cc}
			peer.send(tt.first)
			m, err := peer.next()
			if err != nil {
				t.Fatal(err)
			}
			if ack, ok := m.(Ack); !ok || ack.Ok || !strings.Contains(ack.Message, tt.reason) {
				t.Fatalf("got %#v, want a refusal about %q", m, tt.reason)
			}
			if err := <-errc; err == nil {
				t.Fatal("ServerHandshake succeeded")
			}
		})
	}
}

// Agents already deployed speak version 1: the cloud still accepts them, and
// returns the version so that the session writes what they understand.
func TestServerHandshakeAcceptsVersion1(t *testing.T) {
	sc, cc := wsPair(t)
	type result struct {
		h   Handshake
		err error
	}
	done := make(chan result, 1)
	go func() {
		h, err := ServerHandshake(context.Background(), sc, func(context.Context, string, string) error { return nil })
		done <- result{h, err}
	}()
	peer := rawPeer{t, cc}
	peer.send(Handshake{Name: "old", Key: "k", Version: MinProtocolVersion})
	m, err := peer.next()
	if err != nil {
		t.Fatal(err)
	}
	if ack, ok := m.(Ack); !ok || !ack.Ok {
		t.Fatalf("version 1 answered with %#v", m)
	}
	if r := <-done; r.err != nil || r.h.Version != MinProtocolVersion {
		t.Fatalf("ServerHandshake = %+v, %v", r.h, r.err)
	}
}
