package setupui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/cloudapi"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/setupcode"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/setupui"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/status"
	"github.com/gatehouse-project/gatehouse/internal/testenv"
	"github.com/gatehouse-project/gatehouse/internal/testtools"
)

// code is the test gateway's setup code.
const code = "ABCDE-FGHJK"

func checker() *setupcode.Checker { return setupcode.NewChecker(code) }

// fake plays the agent: "taken" is refused like the cloud refuses it, any
// other name is accepted and becomes current after two status reads (the
// certificate "arrives").
type fake struct {
	mu      sync.Mutex
	st      status.Status
	pending string
	reads   int
	emails  []string
	target  string // URL of the chosen name, with the test server's port
}

func newFake() *fake {
	return &fake{st: status.Status{Version: "test", Cloud: "https://api.box.test", Name: "gw-020000000001", Zone: "box.test",
		FQDN: "gw-020000000001.box.test", Provisional: true, Mode: "tunnel", URL: "https://gw-020000000001.box.test/",
		Tunnel:      status.Tunnel{Enabled: true, Connected: true, Since: time.Now()},
		Certificate: status.Certificate{Ready: true, NotAfter: time.Now().Add(90 * 24 * time.Hour), Issuer: "Test CA"},
		Ping:        status.Ping{Last: time.Now(), PublicIP: "203.0.113.9"},
		LocalAddrs:  []string{"192.168.1.10"}}}
}

func (f *fake) Status() status.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending != "" {
		f.reads++
		if f.reads > 2 {
			f.st.Name, f.st.FQDN, f.st.Provisional, f.st.Pending = f.pending, f.pending+".box.test", false, ""
			f.st.URL = f.target
			f.pending = ""
		} else {
			f.st.Pending = f.pending
		}
	}
	return f.st
}

func (f *fake) ChooseName(_ context.Context, name string) error {
	if name == "taken" {
		return &cloudapi.Error{Status: 400, Code: "UnavailableName", Reason: "name taken"}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending, f.reads = name, 0
	return nil
}

func (f *fake) SetEmail(_ context.Context, email string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.emails = append(f.emails, email)
	f.st.Email = email
	return nil
}

func (f *fake) RequestReclaim(context.Context, string) error {
	return &cloudapi.Error{Status: 400, Code: "NoEmail", Reason: "no verified email"}
}

func (f *fake) Reclaim(_ context.Context, name, token string) error {
	if token != "good" {
		return &cloudapi.Error{Status: 400, Code: "ReclamationTokenMismatch"}
	}
	return f.ChooseName(context.Background(), name)
}

func TestCrossOriginPostRefused(t *testing.T) {
	f := newFake()
	srv := httptest.NewServer(setupui.New(f, checker(), nil))
	defer srv.Close()
	req, _ := http.NewRequest("POST", srv.URL+"/name", strings.NewReader("name=evil"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://evil.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin POST: %d", resp.StatusCode)
	}
	if f.pending != "" {
		t.Fatal("the cross-origin POST chose a name")
	}
	// The browser's own same-origin POST goes through.
	req, _ = http.NewRequest("POST", srv.URL+"/name", strings.NewReader("name=fine&code="+code))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", srv.URL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/?await=fine" {
		t.Fatalf("same-origin POST: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestForeignHostRefused(t *testing.T) {
	srv := httptest.NewServer(setupui.New(newFake(), checker(), nil))
	defer srv.Close()
	for host, want := range map[string]int{
		"evil.example":             http.StatusMisdirectedRequest, // DNS rebinding
		"gateway.local:8090":       http.StatusOK,
		"192.168.1.10:8090":        http.StatusOK,
		"[fd00::1]:8090":           http.StatusOK,
		"gw-020000000001.box.test": http.StatusOK,
	} {
		req, _ := http.NewRequest("GET", srv.URL+"/", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: %d, want %d", host, resp.StatusCode, want)
		}
	}
}

func TestAPI(t *testing.T) {
	f := newFake()
	srv := httptest.NewServer(setupui.New(f, checker(), nil))
	defer srv.Close()
	post := func(path, body string) (int, map[string]any) {
		resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	if code, m := post("/api/name", `{"name":"taken","code":"`+code+`"}`); code != 400 || m["code"] != "UnavailableName" || m["error"] != "this name is already taken" {
		t.Fatalf("refused name: %d %v", code, m)
	}
	if code, m := post("/api/email", `{"email":"me@example.com","code":"`+code+`"}`); code != 200 || m["ok"] != true {
		t.Fatalf("email: %d %v", code, m)
	}
	if code, m := post("/api/reclaim", `{"name":"old","token":"bad","code":"`+code+`"}`); code != 400 || !strings.Contains(fmt.Sprint(m["error"]), "does not match") {
		t.Fatalf("bad reclamation token: %d %v", code, m)
	}
	resp, err := http.Get(srv.URL + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st status.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Email != "me@example.com" {
		t.Fatalf("status: %v %+v", err, st)
	}
}

// The page in a real browser: the status is shown, a refused name shows the
// cloud's reason, an accepted one ends on the new name's HTTPS address.
func TestSetupPageInChromium(t *testing.T) {
	// The "gateway's" HTTPS page the browser is sent to at the end.
	home := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "<!doctype html><title>home</title><h1>Welcome home</h1>")
	}))
	defer home.Close()
	hu, _ := url.Parse(home.URL)
	f := newFake()
	f.target = fmt.Sprintf("https://myhome.box.test:%s/", hu.Port())
	srv := httptest.NewServer(setupui.New(f, checker(), nil))
	defer srv.Close()

	ctx := testenv.Browser(t, 60*time.Second,
		chromedp.Flag("host-resolver-rules", "MAP myhome.box.test 127.0.0.1"),
		// The test server's certificate is httptest's, for 127.0.0.1.
		chromedp.Flag("ignore-certificate-errors", true))

	var shot []byte
	var statusText string
	if err := chromedp.Run(ctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible("#name-form", chromedp.ByQuery),
		chromedp.FullScreenshot(&shot, 100), // quality 100 makes a PNG,
		chromedp.Text("#status", &statusText, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	testenv.CheckScreenshot(t, shot)
	testenv.KeepScreenshot(t, "setup-page.png", shot)
	for _, want := range []string{"gw-020000000001.box.test", "provisional", "connected", "valid until", "192.168.1.10", "203.0.113.9"} {
		if !strings.Contains(statusText, want) {
			t.Errorf("status lacks %q:\n%s", want, statusText)
		}
	}

	var errText string
	if err := chromedp.Run(ctx,
		chromedp.SetValue("#name-input", "taken", chromedp.ByQuery),
		chromedp.SetValue("#name-code", code, chromedp.ByQuery),
		chromedp.Click("#name-submit", chromedp.ByQuery),
		chromedp.WaitVisible("#error", chromedp.ByQuery),
		chromedp.Text("#error", &errText, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errText, "already taken") {
		t.Fatalf("refusal shown as %q", errText)
	}

	if err := chromedp.Run(ctx,
		chromedp.SetValue("#name-input", "myhome", chromedp.ByQuery),
		chromedp.SetValue("#name-code", code, chromedp.ByQuery),
		chromedp.Click("#name-submit", chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	// The waiting page refreshes until the "certificate" is there, then
	// the server sends the browser to the new name. Queries made while a
	// navigation is under way fail; they are retried.
	var loc, body string
	testtools.Eventually(t, 30*time.Second, "the browser to reach the new name", func() bool {
		return chromedp.Run(ctx, chromedp.Location(&loc)) == nil && strings.HasPrefix(loc, "https://myhome.box.test")
	})
	if err := chromedp.Run(ctx,
		chromedp.WaitVisible("h1", chromedp.ByQuery),
		chromedp.Text("h1", &body, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	if loc != f.target || body != "Welcome home" {
		t.Fatalf("ended on %s showing %q", loc, body)
	}
}

// The attack of issue 14: any LAN client sending no Origin header (curl, a
// compromised device) renamed the gateway, set the owner's email or
// reclaimed a name. Without the setup code, or with a wrong one, every
// such change is refused and nothing reaches the agent; guessing is cut
// short; the owner with the code gets through.
func TestChangesNeedTheSetupCode(t *testing.T) {
	curl := testtools.Binary(t, "curl", "curl")
	f := newFake()
	srv := httptest.NewServer(setupui.New(f, checker(), nil))
	defer srv.Close()
	do := func(path, contentType, body string) (int, string) {
		t.Helper()
		out, err := exec.Command(curl, "-sS", "-o", "-", "-w", "\n%{http_code}", "-H", "Content-Type: "+contentType,
			"--data-binary", body, srv.URL+path).Output()
		if err != nil {
			t.Fatalf("curl %s: %v", path, err)
		}
		s := string(out)
		i := strings.LastIndexByte(s, '\n')
		code, _ := strconv.Atoi(s[i+1:])
		return code, s[:i]
	}
	const form, js = "application/x-www-form-urlencoded", "application/json"
	for _, tc := range []struct{ path, ctype, body string }{
		{"/name", form, "name=evil"},
		{"/api/name", js, `{"name":"evil"}`},
		{"/email", form, "email=evil@example.com"},
		{"/api/email", js, `{"email":"evil@example.com"}`},
		{"/reclaim", form, "name=evil&token=good"},
		{"/api/reclaim", js, `{"name":"evil","token":"good"}`},
		{"/api/name", js, `{"name":"evil","code":"WRONG-CODE1"}`},
		{"/name", form, "name=evil&code=WRONGCODE2"},
	} {
		status, body := do(tc.path, tc.ctype, tc.body)
		if status != http.StatusForbidden || !strings.Contains(body, "setup code") {
			t.Errorf("%s %s: %d %s", tc.path, tc.body, status, body)
		}
	}
	f.mu.Lock()
	changed := f.pending != "" || len(f.emails) > 0
	f.mu.Unlock()
	if changed {
		t.Fatalf("a change without the code reached the agent: pending %q emails %v", f.pending, f.emails)
	}
	// Guessing: a few more wrong codes, then even the right one is
	// refused from this client, before any comparison.
	var status int
	for i := range 10 {
		if status, _ = do("/api/name", js, fmt.Sprintf(`{"name":"evil","code":"GUESS%05d"}`, i)); status == http.StatusTooManyRequests {
			break
		}
	}
	if status != http.StatusTooManyRequests {
		t.Fatalf("no limit on guesses: %d", status)
	}
	if status, body := do("/api/name", js, `{"name":"evil","code":"`+code+`"}`); status != http.StatusTooManyRequests {
		t.Fatalf("the right code over the limit: %d %s", status, body)
	}
	// Asking for a reclamation mail (to the name's verified owner) needs
	// no code: it changes nothing here.
	if status, body := do("/api/reclaim/request", js, `{"name":"old"}`); status != http.StatusBadRequest || !strings.Contains(body, "verified email") {
		t.Fatalf("reclamation request: %d %s", status, body)
	}
}

// The owner, with the code as shown (any case, with or without its
// hyphen), changes the name through the API as the setup command does.
func TestOwnerWithTheCode(t *testing.T) {
	f := newFake()
	srv := httptest.NewServer(setupui.New(f, checker(), nil))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/api/name", "application/json", strings.NewReader(`{"name":"myhome","code":"abcde fghjk"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || f.Status().Pending != "myhome" {
		t.Fatalf("owner's rename: %d", resp.StatusCode)
	}
}

// The address is the public URL with its port when it is not 443, the
// redirect once the chosen name is there goes to it, and the web app's
// health is shown with its detail (the owner's page, not a visitor's).
func TestPublicAddressAndWebApp(t *testing.T) {
	f := newFake()
	f.st.URL = "https://gw-020000000001.box.test:18443/"
	at := time.Now().Add(-time.Minute)
	f.st.Upstream = status.Upstream{URL: "https://127.0.0.1:4443", Checked: at, LastErrorAt: at, LastError: "connecting to 127.0.0.1:4443: connection refused"}
	f.target = "https://myhome.box.test:18443/"
	srv := httptest.NewServer(setupui.New(f, checker(), nil))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(b)
	for _, want := range []string{
		`<a href="https://gw-020000000001.box.test:18443/">https://gw-020000000001.box.test:18443/</a>`,
		`https://127.0.0.1:4443: <span class="bad">not answering</span>`,
		"connecting to 127.0.0.1:4443: connection refused",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}

	if err := f.ChooseName(context.Background(), "myhome"); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	loc := ""
	for range 5 {
		resp, err := client.Get(srv.URL + "/?await=myhome")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusSeeOther {
			loc = resp.Header.Get("Location")
			break
		}
	}
	if loc != "https://myhome.box.test:18443/" {
		t.Fatalf("redirect to %q", loc)
	}
}

// The page lists the owner's own domains with what each is waiting for.
func TestCustomDomainsOnThePage(t *testing.T) {
	f := newFake()
	f.st.CustomDomains = []status.CustomDomain{
		{Domain: "home.example.com", State: status.DomainClaimed, URL: "https://home.example.com/", Certificate: status.Certificate{Ready: true, NotAfter: time.Now().Add(time.Hour)}},
		{Domain: "shop.example.net", State: status.DomainWaitingForCNAME, Reason: "shop.example.net has no CNAME record"},
		{Domain: "taken.example.org", State: status.DomainRefused, Reason: "another gateway has claimed this domain"},
	}
	srv := httptest.NewServer(setupui.New(f, checker(), nil))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`<a href="https://home.example.com/">home.example.com</a>: <span class="ok">served</span>`,
		`shop.example.net: <span class="bad">waiting for its CNAME records</span> (shop.example.net has no CNAME record)`,
		`taken.example.org: <span class="bad">refused</span> (another gateway has claimed this domain)`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("page lacks %q", want)
		}
	}
}
