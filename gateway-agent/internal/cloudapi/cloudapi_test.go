package cloudapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestClient(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		auth := r.Header.Get("Authorization")
		switch {
		case r.URL.Path == "/v1/subscribe" && body["name"] == "taken":
			w.WriteHeader(400)
			w.Write([]byte(`{"error":"UnavailableName","reason":"name taken"}`))
		case r.URL.Path == "/v1/subscribe" && body["mac"] == "02:00:00:00:00:01":
			w.WriteHeader(201)
			w.Write([]byte(`{"name":"gw-020000000001","token":"t1","zone":"box.test","fqdn":"gw-020000000001.box.test"}`))
		case r.URL.Path == "/v1/ping" && auth == "Bearer t1":
			if addrs := body["local_addrs"].([]any); len(addrs) != 1 || addrs[0] != "192.168.1.2" {
				w.WriteHeader(400)
				return
			}
			w.Write([]byte(`{"name":"gw-020000000001","public_ipv4":"203.0.113.1"}`))
		case r.URL.Path == "/v1/ping":
			w.WriteHeader(401)
			w.Write([]byte(`{"error":"Unauthorized","reason":"unknown token"}`))
		case r.URL.Path == "/v1/gateway" && r.Method == "DELETE":
			w.WriteHeader(404)
			w.Write([]byte(`{"error":"NotFound"}`))
		default:
			w.WriteHeader(502)
			w.Write([]byte("<html>bad gateway</html>"))
		}
	}))
	defer srv.Close()
	c := &Client{Endpoint: srv.URL}
	ctx := context.Background()

	sub, err := c.Subscribe(ctx, SubscribeRequest{MAC: "02:00:00:00:00:01"})
	if err != nil || sub.Token != "t1" || sub.FQDN != "gw-020000000001.box.test" {
		t.Fatalf("subscribe by MAC: %+v %v", sub, err)
	}
	_, err = c.Subscribe(ctx, SubscribeRequest{Name: "taken"})
	if !errors.Is(err, ErrNameUnavailable) || Explain(err) != "this name is already taken" {
		t.Fatalf("taken: %v / %s", err, Explain(err))
	}
	info, err := c.Ping(ctx, "t1", []netip.Addr{netip.MustParseAddr("192.168.1.2")})
	if err != nil || info.PublicIPv4 != "203.0.113.1" {
		t.Fatalf("ping: %+v %v", info, err)
	}
	if _, err := c.Ping(ctx, "stale", nil); !errors.Is(err, ErrTokenRefused) || strings.Contains(err.Error(), "stale") {
		t.Fatalf("stale token: %v", err)
	}
	if err := c.Unsubscribe(ctx, "gone"); !errors.Is(err, ErrTokenRefused) {
		t.Fatalf("unsubscribe of a gone name: %v", err)
	}
	if err := c.Reclaim(ctx, "x"); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("a proxy's 502 page: %v", err)
	}
	srv.Close()
	if _, err := c.Info(ctx, "t1"); !errors.Is(err, ErrUnreachable) || !strings.HasPrefix(Explain(err), "the cloud is unreachable") {
		t.Fatalf("cloud down: %v", err)
	}
}
