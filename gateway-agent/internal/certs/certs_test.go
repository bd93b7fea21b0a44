package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"

	"github.com/gatehouse-project/gatehouse/internal/testenv"
	"github.com/gatehouse-project/gatehouse/internal/testtools"
)

// recordsAPI stands in for the cloud's /v1/records: it remembers which
// token set which record.
type recordsAPI struct {
	mu      sync.Mutex
	appends map[string][]string // token -> record names
	deletes int
}

func (a *recordsAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Zone    string `json:"zone"`
		Records []struct {
			Name, Type, Data string
			TTL              int
		} `json:"records"`
	}
	_ = json.NewDecoder(r.Body).Decode(&body)
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	a.mu.Lock()
	switch r.Method {
	case http.MethodPost:
		for _, rec := range body.Records {
			a.appends[token] = append(a.appends[token], rec.Name)
		}
	case http.MethodDelete:
		a.deletes++
	}
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"records": body.Records})
}

// soaServer answers every question with the SOA of box.test in the
// authority section, which is all CertMagic needs to find the zone.
func soaServer(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		soa, _ := dns.NewRR("box.test. 60 IN SOA ns1.box.test. hostmaster.box.test. 1 7200 3600 1209600 60")
		if len(q.Question) == 1 && q.Question[0].Name == "box.test." && q.Question[0].Qtype == dns.TypeSOA {
			m.Answer = append(m.Answer, soa)
		} else {
			m.Ns = append(m.Ns, soa)
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func pool(t *testing.T, files ...string) *x509.CertPool {
	p := x509.NewCertPool()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		p.AppendCertsFromPEM(b)
	}
	return p
}

func serial(t *testing.T, m *Manager, name string) string {
	t.Helper()
	// CertMagic logs the client's address when it has no certificate.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: name, Conn: a})
	if err != nil {
		t.Fatalf("GetCertificate(%s): %v", name, err)
	}
	leaf := c.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			t.Fatal(err)
		}
	}
	return leaf.SerialNumber.String()
}

// A certificate is obtained through the records API with the name's own
// token, served for the name, its wildcard and clients without SNI, and a
// renewal of a short-lived one is served without any restart.
func TestObtainAndRenewWithoutRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Pebble")
	}
	// Pebble accepts every challenge here; the DNS side of the flow is
	// covered by the agent's end-to-end test against the real cloud.
	pebble := testenv.StartPebble(t, "127.0.0.1:1", 40*time.Second, true)
	dnsAddr := soaServer(t)
	api := &recordsAPI{appends: map[string][]string{}}
	srv := httptest.NewServer(api)
	defer srv.Close()

	changes := make(chan string, 16)
	m, err := New(Config{
		StateDir:           t.TempDir(),
		Directory:          pebble.Directory,
		Roots:              pool(t, pebble.RootFile),
		Endpoint:           srv.URL,
		Wildcard:           true,
		RenewCheckInterval: time.Second,
		Resolvers:          []string{dnsAddr},
		PropagationTimeout: -1,
		Logger:             slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		OnChange:           func(n string) { changes <- n },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := m.Manage(ctx, "home.box.test", "tok-home"); err != nil {
		t.Fatal(err)
	}
	testtools.Eventually(t, 60*time.Second, "the certificates", func() bool {
		return m.Status("home.box.test").Ready && m.Status("local.home.box.test").Ready
	})
	st := m.Status("home.box.test")
	if st.LastError != "" || !strings.Contains(st.Issuer, "Pebble") || time.Until(st.NotAfter) > 41*time.Second {
		t.Fatalf("status: %+v", st)
	}
	api.mu.Lock()
	got := api.appends["tok-home"]
	api.mu.Unlock()
	if len(got) == 0 || got[0] != "_acme-challenge.home" {
		t.Fatalf("challenge records sent with the name's token: %v", api.appends)
	}
	first := serial(t, m, "home.box.test")
	serial(t, m, "local.home.box.test") // the wildcard
	if s := serial(t, m, ""); s != first {
		t.Fatalf("no-SNI client got serial %s, want the name's %s", s, first)
	}
	select {
	case <-changes:
	case <-time.After(10 * time.Second):
		t.Fatal("OnChange not called")
	}

	// The 40-second certificate enters its renewal window within about
	// 30 seconds; GetCertificate must then hand out the new one.
	testtools.Eventually(t, 60*time.Second, "a renewed certificate to be served", func() bool {
		return serial(t, m, "home.box.test") != first
	})

	m.Unmanage("home.box.test")
	if m.Status("home.box.test").Ready {
		t.Fatal("an unmanaged name still has a certificate in memory")
	}
}

func TestRecordsProviderPicksTheNamesToken(t *testing.T) {
	m := &Manager{names: map[string]*nameState{"a.box.test": {token: "ta"}, "b.box.test": {token: "tb"}}, cfg: Config{Endpoint: "https://api.box.test"}}
	p := recordsProvider{m}
	for rec, want := range map[string]string{"_acme-challenge.a": "ta", "_acme-challenge.b": "tb"} {
		dp, err := p.provider("box.test.", libdns.TXT{Name: rec, Text: "x"})
		if err != nil || dp.Token != want {
			t.Fatalf("%s: %v %v", rec, dp, err)
		}
	}
	if _, err := p.provider("box.test.", libdns.TXT{Name: "_acme-challenge.c", Text: "x"}); err == nil {
		t.Fatal("a record of an unmanaged name got a token")
	}
}

// A custom domain's certificate is obtained with its challenge record at
// the gateway's own _acme-challenge.NAME.ZONE, sent with the name's token
// (the CNAME of _acme-challenge.DOMAIN points there), and served by SNI
// beside the name's own; unmanaged, it is no longer served.
func TestDelegatedDomain(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Pebble")
	}
	// Pebble accepts every challenge; that the CA does follow the CNAME
	// is the agent's end-to-end test (TestCustomDomain).
	pebble := testenv.StartPebble(t, "127.0.0.1:1", time.Hour, true)
	dnsAddr := soaServer(t)
	api := &recordsAPI{appends: map[string][]string{}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	m, err := New(Config{
		StateDir:           t.TempDir(),
		Directory:          pebble.Directory,
		Roots:              pool(t, pebble.RootFile),
		Endpoint:           srv.URL,
		Wildcard:           false,
		Resolvers:          []string{dnsAddr},
		PropagationTimeout: -1,
		Logger:             slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The custom domain waits for the name's certificate (and with it
	// the ACME account) before its first obtain.
	if err := m.ManageDelegated(ctx, "Shop.Example.com", "home.box.test", "tok-home"); err != nil {
		t.Fatal(err)
	}
	if err := m.Manage(ctx, "home.box.test", "tok-home"); err != nil {
		t.Fatal(err)
	}
	testtools.Eventually(t, 60*time.Second, "the certificates", func() bool {
		return m.Status("home.box.test").Ready && m.Status("shop.example.com").Ready
	})
	api.mu.Lock()
	got := strings.Join(api.appends["tok-home"], ",")
	others := len(api.appends)
	api.mu.Unlock()
	// Two challenges (the name, the custom domain), both at the name's
	// _acme-challenge in box.test, none at the custom domain's own.
	if got != "_acme-challenge.home,_acme-challenge.home" || others != 1 {
		t.Fatalf("challenge records: %v, want two _acme-challenge.home in box.test with tok-home", api.appends)
	}
	if m.Status("*.shop.example.com").Ready {
		t.Fatal("a wildcard was obtained for a custom domain")
	}
	custom := serial(t, m, "shop.example.com")
	if serial(t, m, "home.box.test") == custom {
		t.Fatal("the two names do not get their own certificates")
	}
	m.Unmanage("shop.example.com")
	if m.Status("shop.example.com").Ready || !m.Status("home.box.test").Ready {
		t.Fatal("unmanaging the custom domain")
	}
	// With the name's certificate there, a custom domain is obtained at
	// once.
	if err := m.ManageDelegated(ctx, "shop.example.com", "home.box.test", "tok-home"); err != nil {
		t.Fatal(err)
	}
	testtools.Eventually(t, 60*time.Second, "the custom domain again", func() bool { return m.Status("shop.example.com").Ready })
	if err := m.ManageDelegated(ctx, "home.box.test", "home.box.test", "tok-home"); err == nil {
		t.Fatal("a name delegated to itself was accepted")
	}
}

// A custom domain's challenge record is sent with its token even when the
// name it is delegated to is no longer managed (renamed away meanwhile).
func TestRecordsProviderDelegatedToken(t *testing.T) {
	m := &Manager{names: map[string]*nameState{"shop.example.com": {token: "told", via: "old.box.test"}}, cfg: Config{Endpoint: "https://api.box.test"}}
	dp, err := recordsProvider{m}.provider("box.test.", libdns.TXT{Name: "_acme-challenge.old", Text: "x"})
	if err != nil || dp.Token != "told" {
		t.Fatalf("%v %v", dp, err)
	}
	// The custom domain's own name never gets its token.
	if _, err := (recordsProvider{m}).provider("example.com.", libdns.TXT{Name: "_acme-challenge.shop", Text: "x"}); err == nil {
		t.Fatal("a record at the custom domain itself got a token")
	}
}
