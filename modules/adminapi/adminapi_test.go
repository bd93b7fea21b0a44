package adminapi_test

import (
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/adminapi"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// backend is a real registry; the live tunnels are a fixed set, as the
// hub is the cloud's and this package only joins its names.
type backend struct {
	reg    *registry.Registry
	online []string
	// In a cluster: this node's name, and the holders by gateway as
	// the node's directory has them.
	self    string
	holders map[string][]string
}

func (b backend) Registry() (*registry.Registry, error) {
	if b.reg == nil {
		return nil, adminapi.ErrNoRegistry
	}
	return b.reg, nil
}
func (b backend) Online(name string) bool      { return slices.Contains(b.online, name) }
func (b backend) OnlineNames() []string        { return slices.Clone(b.online) }
func (b backend) Holders(name string) []string { return b.holders[name] }
func (b backend) Cluster() (string, map[string]int, bool) {
	if b.self == "" {
		return "", nil, false
	}
	held := map[string]int{b.self: 0}
	for _, nodes := range b.holders {
		for _, n := range nodes {
			held[n]++
		}
	}
	return b.self, held, true
}

func get(t *testing.T, api *adminapi.API, method, path string, v any) int {
	t.Helper()
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	if v != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, rec.Body)
		}
	}
	return rec.Code
}

func TestOnlineFilterAndErrors(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		reg := registry.New(teststore.Open(t, driver), registry.Config{}, nil)
		for _, n := range []string{"a", "b", "c", "d", "e"} {
			if _, err := reg.Subscribe(t.Context(), registry.SubscribeRequest{Name: n}); err != nil {
				t.Fatal(err)
			}
		}
		api := &adminapi.API{Backend: backend{reg: reg, online: []string{"d", "b", "gone"}}, Node: "n1", Log: zap.NewNop()}
		names := func(path string) ([]string, string) {
			t.Helper()
			var l adminapi.List
			if code := get(t, api, http.MethodGet, path, &l); code != 200 {
				t.Fatalf("%s: %d", path, code)
			}
			var out []string
			for _, g := range l.Gateways {
				if g.Online != (g.Node == "n1") || g.Online != slices.Equal(g.OnlineOn, []string{"n1"}) {
					t.Errorf("%s: online %v on %q %v", g.Name, g.Online, g.Node, g.OnlineOn)
				}
				out = append(out, g.Name)
			}
			return out, l.Next
		}
		if got, next := names("/gatehouse/gateways?online=true&limit=1"); !slices.Equal(got, []string{"b"}) || next != "b" {
			t.Errorf("online page 1 = %v next %q", got, next)
		}
		if got, _ := names("/gatehouse/gateways?online=true&after=b"); !slices.Equal(got, []string{"d"}) {
			t.Errorf("online page 2 = %v", got)
		}
		if got, next := names("/gatehouse/gateways?online=false&limit=2"); !slices.Equal(got, []string{"a", "c"}) || next != "c" {
			t.Errorf("offline page 1 = %v next %q", got, next)
		}
		if got, _ := names("/gatehouse/gateways?online=false&after=c&limit=2"); !slices.Equal(got, []string{"e"}) {
			t.Errorf("offline page 2 = %v", got)
		}
		var body map[string]string
		for _, tc := range []struct {
			method, path string
			code         int
			name         string
		}{
			{http.MethodGet, "/gatehouse/nothing", 404, "NotFound"},
			{http.MethodPut, "/gatehouse/gateways/a", 404, "NotFound"},
			{http.MethodGet, "/gatehouse/gateways/zz", 404, "NoSuchName"},
			{http.MethodPost, "/gatehouse/gateways/zz/disable", 404, "NoSuchName"},
			{http.MethodGet, "/gatehouse/gateways?bogus=1", 400, "BadRequest"},
			{http.MethodPut, "/gatehouse/reserved/Not%20A%20Name", 400, "InvalidName"},
			{http.MethodDelete, "/gatehouse/reserved/api", 400, "BadRequest"},
		} {
			if code := get(t, api, tc.method, tc.path, &body); code != tc.code || body["error"] != tc.name || body["reason"] == "" {
				t.Errorf("%s %s = %d %v; want %d %s with a reason", tc.method, tc.path, code, body, tc.code, tc.name)
			}
		}
		none := &adminapi.API{Backend: backend{}, Log: zap.NewNop()}
		if code := get(t, none, http.MethodGet, "/gatehouse/stats", &body); code != 503 || body["error"] != "NoRegistry" {
			t.Errorf("without a registry: %d %v", code, body)
		}
	})
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// In a cluster every answer says which nodes hold a gateway's tunnel,
// and stats count the gateways each node holds.
func TestClusterPlacement(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		reg := registry.New(teststore.Open(t, driver), registry.Config{}, nil)
		for _, n := range []string{"a", "b", "c"} {
			if _, err := reg.Subscribe(t.Context(), registry.SubscribeRequest{Name: n}); err != nil {
				t.Fatal(err)
			}
		}
		holders := map[string][]string{"a": {"node-b"}, "b": {"node-a", "node-b"}}
		api := &adminapi.API{Backend: backend{reg: reg, online: []string{"a", "b"}, self: "node-a", holders: holders},
			Node: "host", Log: zap.NewNop()}
		var l adminapi.List
		if code := get(t, api, http.MethodGet, "/gatehouse/gateways", &l); code != 200 || len(l.Gateways) != 3 {
			t.Fatalf("list: %d %+v", code, l)
		}
		for _, g := range l.Gateways {
			want := holders[g.Name]
			node := map[string]string{"a": "node-b", "b": "node-a"}[g.Name]
			if g.Online != (want != nil) || !slices.Equal(g.OnlineOn, want) || g.Node != node {
				t.Errorf("%s: online %v on %v (node %q), want %v (node %q)", g.Name, g.Online, g.OnlineOn, g.Node, want, node)
			}
		}
		var g adminapi.Gateway
		if code := get(t, api, http.MethodGet, "/gatehouse/gateways/b", &g); code != 200 || !slices.Equal(g.OnlineOn, []string{"node-a", "node-b"}) {
			t.Errorf("show b: %d %+v", code, g)
		}
		var st adminapi.Stats
		if code := get(t, api, http.MethodGet, "/gatehouse/stats", &st); code != 200 || st.Node != "node-a" || st.Online != 2 ||
			!maps.Equal(st.Held, map[string]int{"node-a": 1, "node-b": 2}) {
			t.Errorf("stats: %d %+v", code, st)
		}
	})
}
