package status

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSaveLoadText(t *testing.T) {
	st := Status{Version: "v1", Updated: time.Now().UTC().Truncate(time.Second), Name: "home", FQDN: "home.box.test", Mode: "tunnel",
		Tunnel:      Tunnel{Enabled: true, LastError: "dial: connection refused", Failures: 3},
		Certificate: Certificate{Ready: true, NotAfter: time.Now().Add(time.Hour), Issuer: "R11"},
		Problems:    []string{"the tunnel is down: dial: connection refused"}}
	path := filepath.Join(t.TempDir(), FileName)
	if err := st.Save(path); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil || got.FQDN != "home.box.test" || !got.Updated.Equal(st.Updated) {
		t.Fatalf("loaded %+v %v", got, err)
	}
	text := got.Text()
	for _, want := range []string{"home.box.test", "down: dial: connection refused", "valid until", "problem:", "last ping:    never"} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
}

func TestPublicURL(t *testing.T) {
	for _, tc := range []struct {
		host string
		port int
		want string
	}{
		{"home.box.test", 443, "https://home.box.test/"},
		{"home.box.test", 0, "https://home.box.test/"},
		{"home.box.test", 18443, "https://home.box.test:18443/"},
	} {
		if got := PublicURL(tc.host, tc.port); got != tc.want {
			t.Errorf("%s %d: %s, want %s", tc.host, tc.port, got, tc.want)
		}
	}
}

func TestUpstreamText(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := Status{Upstream: Upstream{URL: "https://127.0.0.1:4443", Checked: at, LastError: "connecting to 127.0.0.1:4443: connection refused", LastErrorAt: at}}
	if text := st.Text(); !strings.Contains(text, "app:          https://127.0.0.1:4443 not answering since 2026-01-02T03:04:05Z: connecting to 127.0.0.1:4443: connection refused") {
		t.Fatalf("text:\n%s", text)
	}
	st.Upstream.Healthy = true
	if text := st.Text(); !strings.Contains(text, "app:          https://127.0.0.1:4443 answering") {
		t.Fatalf("text:\n%s", text)
	}
}

// With tunnels to several nodes the text has one line per node under the
// summary; the single tunnel through DNS has none.
func TestTunnelConnectionsText(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := Status{Tunnel: Tunnel{Enabled: true, Connected: true, Since: since, RTT: "1ms", Connections: []TunnelConnection{
		{Node: "node-a", Addr: "192.0.2.1", Connected: true, Since: since, RTT: "1ms"},
		{Node: "node-b", Addr: "192.0.2.2", LastError: "dial: connection refused", Failures: 2},
	}}}
	text := st.Text()
	for _, want := range []string{
		"tunnel:       connected since 2026-01-02T03:04:05Z (rtt 1ms)\n",
		"  to node-a:  192.0.2.1 connected since 2026-01-02T03:04:05Z (rtt 1ms)\n",
		"  to node-b:  192.0.2.2 down: dial: connection refused\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	st.Tunnel.Connections = []TunnelConnection{{Connected: true, Since: since}}
	if text := st.Text(); strings.Contains(text, "  to ") {
		t.Errorf("a line for the tunnel through DNS:\n%s", text)
	}
}
