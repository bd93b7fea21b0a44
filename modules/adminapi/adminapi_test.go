package adminapi_test

import (
	"encoding/json"
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
}

func (b backend) Registry() (*registry.Registry, error) {
	if b.reg == nil {
		return nil, adminapi.ErrNoRegistry
	}
	return b.reg, nil
}
func (b backend) Online(name string) bool { return slices.Contains(b.online, name) }
func (b backend) OnlineNames() []string   { return slices.Clone(b.online) }

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
				if g.Online != (g.Node == "n1") {
					t.Errorf("%s: online %v on %q", g.Name, g.Online, g.Node)
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
