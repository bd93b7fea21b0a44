// Package e2e runs the gateway agent binary against the real cloud (the
// Caddy build with the Gatehouse modules) and Pebble as the ACME CA, as an
// owner would: first registration under the MAC-derived name, a friendly
// name chosen in the setup page in headless Chromium, the LAN address in
// DNS, certificates through DNS-01, HTTPS through the LAN port and (when the
// cloud has the tunnel ingress) through the tunnel, a restart without a new
// registration, and expiry.
package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/setupcode"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/state"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/status"
	"github.com/gatehouse-project/gatehouse/internal/testenv"
	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/smtptest"
)

// mac and provisional are the fake gateway's MAC and the name the cloud
// derives from it.
const (
	mac         = "02:00:00:00:00:01"
	provisional = "gw-020000000001"
	lanAddr     = "192.168.77.10"
)

// echoWebSocket answers each WebSocket message with "echo: " and the
// message, what checkWebSocket expects of every test app.
func echoWebSocket(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer c.CloseNow()
	for {
		typ, b, err := c.Read(r.Context())
		if err != nil {
			return
		}
		if err := c.Write(r.Context(), typ, append([]byte("echo: "), b...)); err != nil {
			return
		}
	}
}

// upstream is the gateway's web app: it echoes what it was asked and who
// asked (X-Forwarded-For), and echoes WebSocket messages on /ws.
func upstream(t *testing.T) string { return labelledUpstream(t, "hello from the gateway app") }

func labelledUpstream(t *testing.T, label string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", echoWebSocket)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s\nhost=%s\nxff=%s\nproto=%s\n", label, r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// agentRun is a running agent process and the ports it was given.
type agentRun struct {
	*testenv.Process
	setup, https int
	stateDir     string
}

func startAgent(t *testing.T, c *testenv.Cloud, p *testenv.Pebble, stateDir, up string, setup, https int, extra ...string) *agentRun {
	t.Helper()
	args := append([]string{"run"}, c.AgentArgs(p, stateDir)...)
	// A later -mac in extra wins.
	args = append(args, "-mac", mac, "-upstream", up, "-local-addrs", lanAddr,
		"-setup-listen", fmt.Sprintf("127.0.0.1:%d", setup), "-https-listen", fmt.Sprintf("127.0.0.1:%d", https),
		"-ping-interval", "2s", "-log-level", "debug", "-api-listen", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)))
	args = append(args, extra...)
	proc := testenv.Start(t, "gateway-agent", t.TempDir(), nil, testenv.AgentBinary(t), args...)
	return &agentRun{Process: proc, setup: setup, https: https, stateDir: stateDir}
}

func (a *agentRun) status(t *testing.T) status.Status {
	t.Helper()
	var st status.Status
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/status", a.setup))
	if err != nil {
		return st
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(&st)
	return st
}

func (a *agentRun) waitReady(t *testing.T, name string, tunnel bool) status.Status {
	t.Helper()
	var st status.Status
	testtools.Eventually(t, 90*time.Second, name+" served with its certificate", func() bool {
		if a.Exited() {
			t.Fatalf("agent exited:\n%s", a.Output())
		}
		st = a.status(t)
		return st.Name == name && st.Certificate.Ready && st.Certificate.Wildcard && (!tunnel || st.Tunnel.Connected)
	})
	return st
}

// lanGet fetches https://HOST:PORT/PATH from the agent's LAN port, trusting
// roots, with HOST's name in SNI.
func lanGet(t *testing.T, roots []byte, host string, port int, path string) (string, *x509.Certificate) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(roots)
	var peer *x509.Certificate
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			// From 127.0.0.3: the address X-Forwarded-For must carry.
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}}
			return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", port))
		},
		ForceAttemptHTTP2: true,
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Get(fmt.Sprintf("https://%s:%d%s", host, port, path))
	if err != nil {
		t.Fatalf("GET https://%s:%d%s: %v", host, port, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		peer = resp.TLS.PeerCertificates[0]
	}
	return string(b), peer
}

// curlTunnel fetches https://NAME.box.test:PORT/ from the cloud's public
// port, so the connection goes down the gateway's tunnel, and returns the
// body and the issuer of the certificate curl saw.
func curlTunnel(t *testing.T, c *testenv.Cloud, rootFile, fqdn string) (string, string) {
	t.Helper()
	curl := testtools.Binary(t, "curl", "curl")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// From 127.0.0.2, so the original client differs from the cloud's
	// own address (127.0.0.1) in X-Forwarded-For.
	out, err := exec.CommandContext(ctx, curl, "-sS", "-v", "--max-time", "20", "--interface", "127.0.0.2", "--cacert", rootFile,
		"--resolve", fmt.Sprintf("%s:%d:127.0.0.1", fqdn, c.HTTPSPort),
		fmt.Sprintf("https://%s:%d/through-the-tunnel", fqdn, c.HTTPSPort)).CombinedOutput()
	if err != nil {
		t.Fatalf("curl through the tunnel: %v\n%s", err, out)
	}
	issuer := ""
	for _, l := range strings.Split(string(out), "\n") {
		if i := strings.Index(l, "issuer:"); i >= 0 {
			issuer = strings.TrimSpace(l[i+len("issuer:"):])
		}
	}
	return string(out), issuer
}

func TestAgentEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	start := time.Now()
	defer func() {
		if t.Failed() {
			t.Logf("failed after %s", time.Since(start))
		}
	}()
	c := testenv.StartCloud(t, testenv.CloudOptions{Tunnel: true})
	p := testenv.StartPebble(t, fmt.Sprintf("127.0.0.1:%d", c.DNSPort), 24*time.Hour, false)
	up := upstream(t)
	stateDir := filepath.Join(t.TempDir(), "state")
	setupPort, httpsPort := testenv.FreePort(t), testenv.FreePort(t)

	// First run: the MAC-derived name, its certificate, the tunnel. A
	// renamed-away name stays reserved for 10 s instead of 7 days.
	a := startAgent(t, c, p, stateDir, up, setupPort, httpsPort, "-rename-grace", "10s")
	st := a.waitReady(t, provisional, true)
	if !st.Provisional || st.FQDN != provisional+".box.test" {
		t.Fatalf("first status: %+v", st)
	}
	if fi, err := os.Stat(stateDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state directory: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(stateDir, state.FileName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi.Mode(), err)
	}
	testtools.Eventually(t, 20*time.Second, "the ping in DNS", func() bool {
		return slices.Equal(testenv.Dig(t, c.DNSPort, "local."+provisional+".box.test", "A"), []string{lanAddr})
	})
	roots := p.IssuedRoots(t)
	body, cert := lanGet(t, roots, "local."+provisional+".box.test", httpsPort, "/lan")
	if !strings.Contains(body, "hello from the gateway app") || !strings.Contains(body, "xff=127.0.0.3\n") || !strings.Contains(body, "proto=https") {
		t.Fatalf("through the LAN port: %s", body)
	}
	if !strings.Contains(cert.Issuer.CommonName, "Pebble") {
		t.Fatalf("LAN certificate issued by %s", cert.Issuer)
	}
	checkWebSocket(t, roots, provisional+".box.test", httpsPort)

	rootFile := filepath.Join(t.TempDir(), "pebble-root.pem")
	if err := os.WriteFile(rootFile, roots, 0o600); err != nil {
		t.Fatal(err)
	}
	if c.TunnelIngress {
		out, issuer := curlTunnel(t, c, rootFile, provisional+".box.test")
		if !strings.Contains(out, "hello from the gateway app") || !strings.Contains(out, "xff=127.0.0.2\n") || !strings.Contains(issuer, "Pebble") {
			t.Fatalf("through the tunnel (issuer %q):\n%s", issuer, out)
		}
		checkWebSocket(t, roots, provisional+".box.test", c.HTTPSPort)
		t.Log("curl through the tunnel: the page arrived with the agent's own certificate")
	} else {
		t.Logf("the cloud binary has no %s: curl through the tunnel not run", testenv.ListenerModule)
	}

	// The owner chooses a name in the setup page, with the setup code the
	// agent logged.
	setupCode := regexp.MustCompile(`setup_code=([0-9A-Z-]+)`).FindStringSubmatch(a.Output())
	if setupCode == nil {
		t.Fatalf("no setup code in the agent's log:\n%s", a.Output())
	}
	renameInBrowser(t, a, setupCode[1])
	// The provisional name is not given up at once: it stays reserved to
	// this gateway for the grace period.
	var switched status.Status
	testtools.Eventually(t, 90*time.Second, "the switch to myhome", func() bool {
		switched = a.status(t)
		return switched.Name == "myhome"
	})
	if len(switched.Reserved) != 1 || switched.Reserved[0].Name != provisional {
		t.Fatalf("the provisional name is not reserved after the switch: %+v", switched.Reserved)
	}
	if len(testenv.Dig(t, c.DNSPort, provisional+".box.test", "A")) == 0 {
		t.Fatal("the reserved provisional name left DNS at once")
	}
	st = a.waitReady(t, "myhome", true)
	if st.Provisional || st.Pending != "" {
		t.Fatalf("after rename: %+v", st)
	}
	testtools.Eventually(t, 20*time.Second, "the new name's LAN address in DNS", func() bool {
		return slices.Equal(testenv.Dig(t, c.DNSPort, "local.myhome.box.test", "A"), []string{lanAddr})
	})
	testtools.Eventually(t, 20*time.Second, "the provisional name to be given up", func() bool {
		return len(testenv.Dig(t, c.DNSPort, provisional+".box.test", "A")) == 0
	})
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).
		Get(fmt.Sprintf("http://127.0.0.1:%d/?await=myhome", setupPort))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The public URL carries the cloud's port, which is not 443 here.
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != fmt.Sprintf("https://myhome.box.test:%d/", c.HTTPSPort) {
		t.Fatalf("setup page once the certificate is there: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if body, _ := lanGet(t, roots, "myhome.box.test", httpsPort, "/"); !strings.Contains(body, "host=") {
		t.Fatalf("new name through the LAN port: %s", body)
	}
	if c.TunnelIngress {
		if out, _ := curlTunnel(t, c, rootFile, "myhome.box.test"); !strings.Contains(out, "xff=127.0.0.2\n") {
			t.Fatalf("new name through the tunnel:\n%s", out)
		}
	}
	before, err := os.ReadFile(filepath.Join(stateDir, state.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(a.Output(), tokenOf(t, before)) {
		t.Fatal("the token appears in the agent's log")
	}

	// A restart: same name and token, no new registration, the tunnel back.
	a.Stop()
	a2 := startAgent(t, c, p, stateDir, up, setupPort, httpsPort)
	a2.waitReady(t, "myhome", true)
	after, _ := os.ReadFile(filepath.Join(stateDir, state.FileName))
	if tokenOf(t, before) != tokenOf(t, after) {
		t.Fatal("the restart changed the token")
	}
	if strings.Contains(a2.Output(), "registered provisional name") || len(testenv.Dig(t, c.DNSPort, provisional+".box.test", "A")) != 0 {
		t.Fatal("the restart registered again")
	}
	if strings.Contains(a2.Output(), "obtaining certificate") {
		t.Fatal("the restart obtained a new certificate instead of loading it")
	}

	// The cloud restarts under the agent: the tunnel comes back by itself.
	c.Restart(t)
	testtools.Eventually(t, 60*time.Second, "the tunnel to come back after the cloud restarted", func() bool {
		s := a2.status(t)
		return s.Tunnel.Connected && time.Since(s.Tunnel.Since) < time.Minute
	})
	if c.TunnelIngress {
		if out, _ := curlTunnel(t, c, rootFile, "myhome.box.test"); !strings.Contains(out, "hello from the gateway app") {
			t.Fatalf("through the tunnel after the cloud restarted:\n%s", out)
		}
	}

	// The status command reads the running agent.
	out, err := exec.Command(testenv.AgentBinary(t), "status", "-setup-listen", fmt.Sprintf("127.0.0.1:%d", setupPort), "-state-dir", stateDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "myhome.box.test") || !strings.Contains(string(out), "connected") {
		t.Fatalf("status command: %v\n%s", err, out)
	}
}

func tokenOf(t *testing.T, stateFile []byte) string {
	var st state.State
	if err := json.Unmarshal(stateFile, &st); err != nil || !st.Current.Valid() {
		t.Fatalf("state file: %v %s", err, stateFile)
	}
	return st.Current.Token
}

// checkWebSocket talks WebSocket through the agent's LAN port.
func checkWebSocket(t *testing.T, roots []byte, host string, port int) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(roots)
	hc := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", port))
		},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, fmt.Sprintf("wss://%s:%d/ws", host, port), &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatalf("websocket through the agent: %v", err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	_, b, err := ws.Read(ctx)
	if err != nil || string(b) != "echo: ping" {
		t.Fatalf("websocket answer %q %v", b, err)
	}
}

// renameInBrowser uses the setup page in Chromium: a reserved name is
// refused with the cloud's reason, then "myhome" is accepted and the page
// waits for its certificate.
func renameInBrowser(t *testing.T, a *agentRun, setupCode string) {
	t.Helper()
	ctx := testenv.Browser(t, 90*time.Second)
	page := fmt.Sprintf("http://127.0.0.1:%d/", a.setup)
	var shot []byte
	var statusText, errText string
	if err := chromedp.Run(ctx,
		chromedp.Navigate(page),
		chromedp.WaitVisible("#name-form", chromedp.ByQuery),
		chromedp.FullScreenshot(&shot, 100),
		chromedp.Text("#status", &statusText, chromedp.ByQuery),
		chromedp.SetValue("#name-input", "api", chromedp.ByQuery),
		chromedp.SetValue("#name-code", setupCode, chromedp.ByQuery),
		chromedp.Click("#name-submit", chromedp.ByQuery),
		chromedp.WaitVisible("#error", chromedp.ByQuery),
		chromedp.Text("#error", &errText, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	testenv.CheckScreenshot(t, shot)
	testenv.KeepScreenshot(t, "agent-setup-page.png", shot)
	if !strings.Contains(statusText, provisional+".box.test") || !strings.Contains(statusText, "connected") || !strings.Contains(statusText, lanAddr) {
		t.Fatalf("status on the page:\n%s", statusText)
	}
	if !strings.Contains(errText, "not available") || !strings.Contains(errText, "reserved") {
		t.Fatalf("refusal shown as %q", errText)
	}
	var waiting string
	if err := chromedp.Run(ctx,
		chromedp.SetValue("#name-input", "myhome", chromedp.ByQuery),
		chromedp.SetValue("#name-code", setupCode, chromedp.ByQuery),
		chromedp.Click("#name-submit", chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	// The page shows the wait, or has already moved on to the new name
	// (the redirect to https://myhome.box.test/ cannot load here: no
	// public port 443).
	var loc string
	testtools.Eventually(t, 90*time.Second, "the page to wait for or move to the new name", func() bool {
		if chromedp.Run(ctx, chromedp.Location(&loc)) != nil {
			return false
		}
		if strings.HasPrefix(loc, "https://myhome.box.test") || strings.HasPrefix(loc, "chrome-error:") {
			return true
		}
		return chromedp.Run(ctx, chromedp.Text("#waiting", &waiting, chromedp.ByQuery, chromedp.AtLeast(0))) == nil && strings.Contains(waiting, "myhome")
	})
}

// Dynamic DNS mode and expiry: the name follows the address the agent pings
// from, disappears from DNS once the agent has been silent for longer than
// expire_after, and comes back when the agent runs again.
func TestAgentDynamicModeAndExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	c := testenv.StartCloud(t, testenv.CloudOptions{ExpireAfter: "4s"})
	p := testenv.StartPebble(t, fmt.Sprintf("127.0.0.1:%d", c.DNSPort), 24*time.Hour, false)
	stateDir := filepath.Join(t.TempDir(), "state")
	setupPort, httpsPort := testenv.FreePort(t), testenv.FreePort(t)
	a := startAgent(t, c, p, stateDir, upstream(t), setupPort, httpsPort, "-mode", "dynamic", "-ping-interval", "1s")
	st := a.waitReady(t, provisional, false)
	if st.Mode != "dynamic" || st.Tunnel.Enabled {
		t.Fatalf("dynamic mode status: %+v", st)
	}
	name := provisional + ".box.test"
	testtools.Eventually(t, 20*time.Second, "the name to follow the pinging address", func() bool {
		return slices.Equal(testenv.Dig(t, c.DNSPort, name, "A"), []string{"127.0.0.1"})
	})
	// Pinging every second keeps a 4-second expiry away.
	time.Sleep(6 * time.Second)
	if got := testenv.Dig(t, c.DNSPort, name, "A"); !slices.Equal(got, []string{"127.0.0.1"}) {
		t.Fatalf("a pinging gateway expired: %v", got)
	}
	a.Kill() // a power cut: no goodbye
	testtools.Eventually(t, 20*time.Second, "the silent gateway to expire", func() bool {
		return len(testenv.Dig(t, c.DNSPort, name, "A")) == 0 && len(testenv.Dig(t, c.DNSPort, "local."+name, "A")) == 0
	})
	a2 := startAgent(t, c, p, stateDir, upstream(t), setupPort, httpsPort, "-mode", "dynamic", "-ping-interval", "1s")
	testtools.Eventually(t, 30*time.Second, "the name to come back with the agent", func() bool {
		return slices.Equal(testenv.Dig(t, c.DNSPort, "local."+name, "A"), []string{lanAddr})
	})
	if strings.Contains(a2.Output(), "registered provisional name") {
		t.Fatal("the agent registered again after expiry")
	}
}

// post calls the agent's local setup API as the setup command does: with
// the setup code read from the state directory.
func (a *agentRun) post(t *testing.T, path string, body map[string]string) (int, map[string]any) {
	t.Helper()
	code, err := setupcode.Read(a.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	body = maps.Clone(body)
	body["code"] = code
	b, _ := json.Marshal(body)
	resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d%s", a.setup, path), "application/json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// The owner verifies an email from one gateway, then moves the name to a
// new gateway with the mailed reclamation token: the new gateway serves the
// name, and the old one is told, in plain words, that its token was refused.
func TestAgentEmailAndReclaim(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	smtp := smtptest.Start(t)
	c := testenv.StartCloud(t, testenv.CloudOptions{Tunnel: true, SMTP: smtp.Addr()})
	p := testenv.StartPebble(t, fmt.Sprintf("127.0.0.1:%d", c.DNSPort), 24*time.Hour, false)

	old := startAgent(t, c, p, filepath.Join(t.TempDir(), "old"), labelledUpstream(t, "old gateway"), testenv.FreePort(t), testenv.FreePort(t))
	old.waitReady(t, provisional, true)
	if code, m := old.post(t, "/api/name", map[string]string{"name": "myhome"}); code != 200 {
		t.Fatalf("choosing myhome: %d %v", code, m)
	}
	old.waitReady(t, "myhome", true)
	if code, m := old.post(t, "/api/email", map[string]string{"email": "owner@example.com"}); code != 200 {
		t.Fatalf("email: %d %v", code, m)
	}
	link := regexp.MustCompile(`https://api\.box\.test:\d+/verifyemail\?s=[A-Za-z0-9_%-]+`).FindString(smtp.NextText(t, "owner@example.com"))
	if link == "" {
		t.Fatal("no verification link in the mail")
	}
	resp, err := c.Client(t).Get(link)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "Email verified") {
		t.Fatalf("verification link: %d %s", resp.StatusCode, page)
	}

	// The new gateway finds the name taken, with reclamation possible.
	fresh := startAgent(t, c, p, filepath.Join(t.TempDir(), "new"), labelledUpstream(t, "new gateway"), testenv.FreePort(t), testenv.FreePort(t),
		"-mac", "02:00:00:00:00:02")
	fresh.waitReady(t, "gw-020000000002", true)
	code, m := fresh.post(t, "/api/name", map[string]string{"name": "myhome"})
	if code != 400 || m["code"] != "UnavailableNameReclamationPossible" || !strings.Contains(fmt.Sprint(m["error"]), "reclamation") {
		t.Fatalf("taken name: %d %v", code, m)
	}
	if code, m := fresh.post(t, "/api/reclaim/request", map[string]string{"name": "myhome"}); code != 200 {
		t.Fatalf("reclaim request: %d %v", code, m)
	}
	rt := regexp.MustCompile(`(?m)^\s*([A-Za-z0-9_-]{43})\s*$`).FindStringSubmatch(smtp.NextText(t, "owner@example.com"))
	if rt == nil {
		t.Fatal("no reclamation token in the mail")
	}
	if code, m := fresh.post(t, "/api/reclaim", map[string]string{"name": "myhome", "token": "x" + rt[1][1:]}); code != 400 {
		t.Fatalf("a wrong token: %d %v", code, m)
	}
	if code, m := fresh.post(t, "/api/reclaim", map[string]string{"name": "myhome", "token": rt[1]}); code != 200 {
		t.Fatalf("reclaim: %d %v", code, m)
	}
	fresh.waitReady(t, "myhome", true)

	testtools.Eventually(t, 30*time.Second, "the old gateway to report its refused token", func() bool {
		return strings.Contains(strings.Join(old.status(t).Problems, "\n"), "refused this gateway's token")
	})
	if c.TunnelIngress {
		testtools.Eventually(t, 20*time.Second, "the name to reach the new gateway through the tunnel", func() bool {
			roots := filepath.Join(t.TempDir(), "roots.pem")
			_ = os.WriteFile(roots, p.IssuedRoots(t), 0o600)
			out, _ := curlTunnel(t, c, roots, "myhome.box.test")
			return strings.Contains(out, "new gateway")
		})
	}
}
