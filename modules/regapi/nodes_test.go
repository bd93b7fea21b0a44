package regapi_test

import (
	"net/http"
	"net/netip"
	"sync"
	"testing"

	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/regapi"
)

// nodeList is a membership whose nodes the test changes.
type nodeList struct {
	mu    sync.Mutex
	nodes []regapi.Node
}

func (l *nodeList) Nodes() []regapi.Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nodes
}

func (l *nodeList) set(nodes ...regapi.Node) {
	l.mu.Lock()
	l.nodes = nodes
	l.mu.Unlock()
}

// GET /v1/nodes answers a gateway (its token) the live nodes sorted by
// name with their addresses in text form, follows the membership as it
// changes, and refuses callers without a valid token.
func TestV1Nodes(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		nodes := &nodeList{}
		e := newEnv(t, driver, options{nodes: nodes})
		token := e.subscribe("nodeasker")

		r := e.do("GET", "/v1/nodes", nil, token)
		if r.status != http.StatusOK || string(r.body) != `{"nodes":[]}`+"\n" {
			t.Fatalf("no nodes: %d %s", r.status, r.body)
		}

		nodes.set(
			regapi.Node{Name: "node-b", Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("fd00::2")}},
			regapi.Node{Name: "node-a", Addrs: []netip.Addr{netip.MustParseAddr("::ffff:127.0.0.1")}},
			regapi.Node{Name: "node-c"},
		)
		r = e.do("GET", "/v1/nodes", nil, token)
		want := `{"nodes":[{"name":"node-a","addrs":["127.0.0.1"]},{"name":"node-b","addrs":["127.0.0.2","fd00::2"]},{"name":"node-c","addrs":[]}]}` + "\n"
		if r.status != http.StatusOK || string(r.body) != want {
			t.Fatalf("got %d %s\nwant %s", r.status, r.body, want)
		}
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("Content-Type %q", ct)
		}

		nodes.set(regapi.Node{Name: "node-b", Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.2")}})
		r = e.do("GET", "/v1/nodes", nil, token)
		if want := `{"nodes":[{"name":"node-b","addrs":["127.0.0.2"]}]}` + "\n"; string(r.body) != want {
			t.Fatalf("after a change: %s, want %s", r.body, want)
		}

		wantError(t, e.do("GET", "/v1/nodes", nil, ""), http.StatusUnauthorized, "Unauthorized")
		wantError(t, e.do("GET", "/v1/nodes", nil, "not-a-token"), http.StatusUnauthorized, "Unauthorized")
	})
}

// A cloud without a membership (one node) answers an empty list.
func TestV1NodesWithoutLister(t *testing.T) {
	e := newEnv(t, "sqlite", options{})
	token := e.subscribe("lonely")
	r := e.do("GET", "/v1/nodes", nil, token)
	if r.status != http.StatusOK || string(r.body) != `{"nodes":[]}`+"\n" {
		t.Fatalf("got %d %s", r.status, r.body)
	}
}
