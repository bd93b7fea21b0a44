package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testenv"
	"github.com/gatehouse-project/gatehouse/internal/testtools"
)

// seen is what the echo app reports about a request.
type seen struct {
	Host      string `json:"host"`
	XFF       string `json:"xff"`
	XFH       string `json:"xfh"`
	XFP       string `json:"xfp"`
	Forwarded string `json:"forwarded"`
	RealIP    string `json:"real_ip"`
}

// httpsEchoApp is a gateway app that listens with HTTPS and a self-signed
// certificate, as the WebThings gateway does on 4443: it reports what it
// was asked, echoes WebSocket messages on /ws and sends server-sent events
// on /events, each after the test took the previous one (next).
func httpsEchoApp(t *testing.T, next <-chan struct{}) (url, caFile string, srv *http.Server) {
	dir := t.TempDir()
	certFile, keyFile := testenv.SelfSignedCert(t, dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", echoWebSocket)
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Second):
				return
			}
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(seen{Host: r.Host, XFF: r.Header.Get("X-Forwarded-For"), XFH: r.Header.Get("X-Forwarded-Host"),
			XFP: r.Header.Get("X-Forwarded-Proto"), Forwarded: r.Header.Get("Forwarded"), RealIP: r.Header.Get("X-Real-Ip")})
	})
	srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.ServeTLS(ln, certFile, keyFile) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "https://" + ln.Addr().String(), certFile, srv
}

// visitorClient reaches host:port (a public name on the cloud's port, or
// local.NAME on the agent's LAN port) at 127.0.0.1 from 127.0.0.2, with
// HTTP/2 offered as a browser does.
func visitorClient(t *testing.T, roots []byte, port int) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(roots)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
			return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", port))
		},
		ForceAttemptHTTP2: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func askApp(t *testing.T, hc *http.Client, u string) (seen, *http.Response) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set("X-Real-Ip", "6.6.6.6")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	var s seen
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("GET %s: %s %s", u, resp.Status, b)
	}
	return s, resp
}

// The app behind the agent cannot tell it is behind a tunnel, except for
// the forwarding headers: it gets the Host the visitor asked for (through
// the tunnel and on the LAN), HTTP/2 reaches the visitor, WebSockets and
// server-sent events flow through the tunnel, the app's own HTTPS with a
// self-signed certificate is verified against its CA, and when the app
// dies the visitor sees a plain page while the owner sees why.
func TestAgentProxyIsFaithful(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	c := testenv.StartCloud(t, testenv.CloudOptions{Tunnel: true})
	if !c.TunnelIngress {
		testtools.Missing(t, "the cloud's "+testenv.ListenerModule+" module", "build the cloud with ./xcaddy-build.sh, or point GATEHOUSE_CADDY at such a build")
	}
	p := testenv.StartPebble(t, fmt.Sprintf("127.0.0.1:%d", c.DNSPort), 24*time.Hour, false)
	next := make(chan struct{})
	up, caFile, app := httpsEchoApp(t, next)
	stateDir := filepath.Join(t.TempDir(), "state")
	setupPort, httpsPort := testenv.FreePort(t), testenv.FreePort(t)
	const name = "gw-020000000002"
	fqdn := name + ".box.test"
	args := []string{"-mac", "02:00:00:00:00:02", "-upstream-ca", caFile, "-forwarded-header", "-upstream-health-interval", "1s"}
	a := startAgent(t, c, p, stateDir, up, setupPort, httpsPort, args...)
	st := a.waitReady(t, name, true)
	if want := fmt.Sprintf("https://%s:%d/", fqdn, c.HTTPSPort); st.URL != want {
		t.Fatalf("status URL %q, want %q", st.URL, want)
	}
	roots := p.IssuedRoots(t)
	public := visitorClient(t, roots, c.HTTPSPort)
	publicHost := fmt.Sprintf("%s:%d", fqdn, c.HTTPSPort)

	// Through the tunnel, over HTTP/2.
	s, resp := askApp(t, public, "https://"+publicHost+"/")
	want := seen{Host: publicHost, XFF: "127.0.0.2", XFH: publicHost, XFP: "https", Forwarded: `for=127.0.0.2;host="` + publicHost + `";proto=https`}
	if s != want || resp.ProtoMajor != 2 {
		t.Fatalf("through the tunnel (%s) the app saw %+v, want %+v", resp.Proto, s, want)
	}
	// On the LAN, as local.NAME.
	lanHost := fmt.Sprintf("local.%s:%d", fqdn, httpsPort)
	if s, _ := askApp(t, visitorClient(t, roots, httpsPort), "https://"+lanHost+"/"); s.Host != lanHost || s.XFF != "127.0.0.2" || s.XFH != lanHost {
		t.Fatalf("on the LAN the app saw %+v", s)
	}

	// A WebSocket and server-sent events through the tunnel.
	checkWebSocket(t, roots, fqdn, c.HTTPSPort)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+publicHost+"/events", nil)
	resp, err := public.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("data: event %d\n", i) {
			t.Fatalf("event %d: %q %v", i, line, err)
		}
		_, _ = br.ReadString('\n')
		if i < 2 {
			select {
			case next <- struct{}{}:
			case <-ctx.Done():
				t.Fatal("the app is not waiting: the events were held back")
			}
		}
	}
	resp.Body.Close()

	// upstream_host: the app gets its own address as Host instead.
	a.Stop()
	a = startAgent(t, c, p, stateDir, up, setupPort, httpsPort, append(args, "-upstream-host", "{upstream_hostport}")...)
	a.waitReady(t, name, true)
	upHost := strings.TrimPrefix(up, "https://")
	testtools.Eventually(t, 30*time.Second, "the app to see upstream_host", func() bool {
		s, _ := askApp(t, public, "https://"+publicHost+"/")
		return s.Host == upHost && s.XFH == publicHost
	})

	// The app dies: the visitor gets a plain 502, the owner the detail.
	_ = app.Close()
	_, upPort, _ := net.SplitHostPort(upHost)
	resp, err = public.Get("https://" + publicHost + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("dead app: %s %s", resp.Status, b)
	}
	for _, leak := range []string{"127.0.0.1", upPort, "refused", "dial", "https://"} {
		if strings.Contains(string(b), leak) {
			t.Errorf("the visitor's page shows %q:\n%s", leak, b)
		}
	}
	testtools.Eventually(t, 10*time.Second, "the status to show the dead app", func() bool {
		st := a.status(t)
		return !st.Upstream.Healthy && strings.Contains(st.Upstream.LastError, upPort) &&
			len(st.Problems) > 0 && strings.Contains(strings.Join(st.Problems, "\n"), "web app is not answering")
	})
	if !strings.Contains(a.Output(), "upstream failed") {
		t.Error("the agent did not log the failure")
	}
}
