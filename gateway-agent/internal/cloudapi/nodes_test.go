package cloudapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/regapi"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

type nodes []regapi.Node

func (n nodes) Nodes() []regapi.Node { return n }

type noMail struct{}

func (noMail) SendVerification(context.Context, string, string, string) error { return nil }
func (noMail) SendReclamation(context.Context, string, string, string) error  { return nil }

// Nodes reads the real API's list (a node without an address is of no use
// to a tunnel and is left out), refuses a wrong token, and takes a cloud
// older than the endpoint (404) for one without nodes.
func TestNodes(t *testing.T) {
	reg := registry.New(teststore.Open(t, "sqlite"), registry.Config{SweepInterval: time.Hour}, noMail{})
	reg.Start()
	defer reg.Stop()
	srv := httptest.NewServer(regapi.New(reg, regapi.Config{Zone: "box.test", Nodes: nodes{
		{Name: "node-b", Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.2")}},
		{Name: "node-a", Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}},
		{Name: "node-z"},
	}}))
	defer srv.Close()
	c := &Client{Endpoint: srv.URL}
	ctx := context.Background()
	sub, err := c.Subscribe(ctx, SubscribeRequest{Name: "lister"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Nodes(ctx, sub.Token)
	want := []Node{
		{Name: "node-a", Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}},
		{Name: "node-b", Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.2")}},
	}
	if err != nil || !slices.EqualFunc(got, want, func(x, y Node) bool { return x.Name == y.Name && slices.Equal(x.Addrs, y.Addrs) }) {
		t.Fatalf("got %+v %v, want %+v", got, err, want)
	}
	if _, err := c.Nodes(ctx, "wrong"); !errors.Is(err, ErrTokenRefused) {
		t.Fatalf("wrong token: %v", err)
	}

	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":"NotFound","reason":"no such endpoint"}`))
	}))
	defer old.Close()
	if got, err := (&Client{Endpoint: old.URL}).Nodes(ctx, sub.Token); err != nil || len(got) != 0 {
		t.Fatalf("older cloud: %+v %v", got, err)
	}
}
