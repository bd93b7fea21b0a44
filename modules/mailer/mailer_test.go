package mailer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools/smtptest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const from = "Gatehouse <noreply@box.example.org>"

// next waits for the server's next message.
func next(t *testing.T, s *smtptest.Server) *smtptest.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := s.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func text(t *testing.T, m *smtptest.Message) string {
	t.Helper()
	body, err := m.Text()
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func plainConfig(s *smtptest.Server) Config {
	return Config{Host: s.Host(), Port: s.Port(), From: from, TLS: TLSNone, HelloName: "cloud.box.example.org"}
}

func TestSendVerification(t *testing.T) {
	s := smtptest.Start(t)
	m, err := New(plainConfig(s))
	if err != nil {
		t.Fatal(err)
	}
	// A token with characters that must be escaped in a query.
	data := Data{Name: "myhome", Zone: "box.example.org.", Token: "a+b/c=d"}
	if err := m.SendVerification(context.Background(), "Owner <owner@example.net>", data); err != nil {
		t.Fatal(err)
	}
	msg := next(t, s)
	if msg.From != "noreply@box.example.org" || len(msg.To) != 1 || msg.To[0] != "owner@example.net" {
		t.Fatalf("envelope from %q to %q", msg.From, msg.To)
	}
	if msg.Helo != "cloud.box.example.org" || msg.TLS {
		t.Fatalf("helo %q, tls %v", msg.Helo, msg.TLS)
	}
	checkHeaders(t, msg, "owner@example.net", "Confirm your email address for myhome.box.example.org")
	body := text(t, msg)
	const link = "https://api.box.example.org/verifyemail?s=a%2Bb%2Fc%3Dd"
	if !strings.Contains(body, "\n"+link+"\n") {
		t.Fatalf("the link %s is not on a line of its own in:\n%s", link, body)
	}
	if !strings.Contains(body, "myhome.box.example.org") {
		t.Fatalf("the name is missing from:\n%s", body)
	}
	// ASCII mail goes unencoded: the link is whole even in the raw message.
	if !strings.Contains(string(msg.Raw), "\r\n"+link+"\r\n") || msg.Header.Get("Content-Transfer-Encoding") != "8bit" {
		t.Fatalf("raw message:\n%s", msg.Raw)
	}
}

// checkHeaders checks what every Gatehouse mail carries.
func checkHeaders(t *testing.T, msg *smtptest.Message, to, subject string) {
	t.Helper()
	if got := msg.Subject(); got != subject {
		t.Errorf("subject %q, want %q", got, subject)
	}
	if addrs, err := msg.Header.AddressList("To"); err != nil || len(addrs) != 1 || addrs[0].Address != to {
		t.Errorf("To %v, %v", addrs, err)
	}
	if addrs, err := msg.Header.AddressList("From"); err != nil || len(addrs) != 1 ||
		addrs[0].Address != "noreply@box.example.org" || addrs[0].Name != "Gatehouse" {
		t.Errorf("From %v, %v", addrs, err)
	}
	if date, err := msg.Header.Date(); err != nil || time.Since(date) > time.Minute {
		t.Errorf("Date %v, %v", date, err)
	}
	if id := msg.Header.Get("Message-Id"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@box.example.org>") {
		t.Errorf("Message-ID %q", id)
	}
	if got := msg.Header.Get("Auto-Submitted"); got != "auto-generated" {
		t.Errorf("Auto-Submitted %q", got)
	}
	if ct := msg.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") || !strings.Contains(strings.ToLower(ct), "utf-8") {
		t.Errorf("Content-Type %q", ct)
	}
	if msg.Header.Get("Mime-Version") != "1.0" {
		t.Errorf("MIME-Version %q", msg.Header.Get("Mime-Version"))
	}
}

func TestSendReclamation(t *testing.T) {
	s := smtptest.Start(t)
	m, err := New(plainConfig(s))
	if err != nil {
		t.Fatal(err)
	}
	const token = "rcl_9f8e7d6c5b4a39281706f5e4d3c2b1a0"
	if err := m.SendReclamation(context.Background(), "owner@example.net", Data{Name: "myhome", Zone: "box.example.org", Token: token}); err != nil {
		t.Fatal(err)
	}
	msg := next(t, s)
	checkHeaders(t, msg, "owner@example.net", "Your reclamation token for myhome.box.example.org")
	body := text(t, msg)
	if !strings.Contains(body, "\n"+token+"\n") || !strings.Contains(body, "for myhome is") {
		t.Fatalf("token or name missing from:\n%s", body)
	}
}

func TestCustomTemplates(t *testing.T) {
	s := smtptest.Start(t)
	cfg := plainConfig(s)
	cfg.Templates = Templates{
		VerificationSubject: "Vérifiez {{.Name}}\n  ({{.Zone}})\n",
		VerificationBody:    "Lien : {{.Link}}\nNom : {{.FQDN}}\nJeton : {{.Token}}\n",
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	data := Data{Name: "maison", FQDN: "maison.box.example.org.", Zone: "box.example.org", Link: "https://example.org/v?s=1", Token: "tok"}
	if err := m.SendVerification(context.Background(), "owner@example.net", data); err != nil {
		t.Fatal(err)
	}
	msg := next(t, s)
	if got := msg.Subject(); got != "Vérifiez maison (box.example.org)" {
		t.Fatalf("subject %q", got)
	}
	want := "Lien : https://example.org/v?s=1\nNom : maison.box.example.org\nJeton : tok\n"
	if got := text(t, msg); got != want {
		t.Fatalf("body %q, want %q", got, want)
	}
	if enc := msg.Header.Get("Content-Transfer-Encoding"); enc != "8bit" {
		t.Fatalf("ascii body sent as %q", enc)
	}
	// Non-ASCII bodies are quoted-printable.
	cfg.Templates.VerificationBody = "Vérifiez : {{.Link}}\n"
	if m, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	if err := m.SendVerification(context.Background(), "owner@example.net", data); err != nil {
		t.Fatal(err)
	}
	msg = next(t, s)
	if got, enc := text(t, msg), msg.Header.Get("Content-Transfer-Encoding"); got != "Vérifiez : https://example.org/v?s=1\n" || enc != "quoted-printable" {
		t.Fatalf("non-ascii body %q sent as %q", got, enc)
	}
	// The reclamation mail kept its default.
	if err := m.SendReclamation(context.Background(), "owner@example.net", data); err != nil {
		t.Fatal(err)
	}
	if got := next(t, s).Subject(); got != "Your reclamation token for maison.box.example.org" {
		t.Fatalf("default subject %q", got)
	}
}

func TestSTARTTLSWithAuth(t *testing.T) {
	s := smtptest.Start(t, smtptest.WithSTARTTLS(), smtptest.WithAuth("mailer", "s3cret"))
	cfg := Config{Host: s.Host(), Port: s.Port(), From: from, Username: "mailer", Password: "s3cret",
		TLSConfig: &tls.Config{RootCAs: s.CertPool()}}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SendReclamation(context.Background(), "owner@example.net", Data{Name: "myhome", Zone: "box.example.org", Token: "t"}); err != nil {
		t.Fatal(err)
	}
	if msg := next(t, s); !msg.TLS || msg.Username != "mailer" {
		t.Fatalf("tls %v, user %q", msg.TLS, msg.Username)
	}

	cfg.Password = "wrong"
	m, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SendReclamation(context.Background(), "owner@example.net", Data{Name: "myhome", Token: "t"}); !errors.Is(err, ErrSend) {
		t.Fatalf("wrong password: %v", err)
	}
}

func TestImplicitTLSWithAuth(t *testing.T) {
	s := smtptest.Start(t, smtptest.WithImplicitTLS(), smtptest.WithAuth("mailer", "s3cret"))
	m, err := New(Config{Host: s.Host(), Port: s.Port(), From: from, TLS: TLSImplicit,
		Username: "mailer", Password: "s3cret", TLSConfig: &tls.Config{RootCAs: s.CertPool()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SendVerification(context.Background(), "owner@example.net", Data{Name: "myhome", Zone: "box.example.org", Token: "t"}); err != nil {
		t.Fatal(err)
	}
	if msg := next(t, s); !msg.TLS || msg.Username != "mailer" {
		t.Fatalf("tls %v, user %q", msg.TLS, msg.Username)
	}
}

// TestNoDowngrade: starttls mode never falls back to the clear, and the
// server's certificate is checked.
func TestNoDowngrade(t *testing.T) {
	data := Data{Name: "myhome", Zone: "box.example.org", Token: "t"}
	plain := smtptest.Start(t)
	m, err := New(Config{Host: plain.Host(), Port: plain.Port(), From: from, TLS: TLSStartTLS})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SendVerification(context.Background(), "owner@example.net", data); !errors.Is(err, ErrSend) {
		t.Fatalf("server without STARTTLS: %v", err)
	}

	untrusted := smtptest.Start(t, smtptest.WithSTARTTLS())
	m, err = New(Config{Host: untrusted.Host(), Port: untrusted.Port(), From: from})
	if err != nil {
		t.Fatal(err)
	}
	err = m.SendVerification(context.Background(), "owner@example.net", data)
	var unknownCA x509.UnknownAuthorityError
	if !errors.Is(err, ErrSend) || !errors.As(err, &unknownCA) {
		t.Fatalf("untrusted certificate: %v", err)
	}
	if plain.Received()+untrusted.Received() != 0 {
		t.Fatal("a message went through")
	}
}

func TestContextEndsSend(t *testing.T) {
	// A server that greets and then says nothing more.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.Write([]byte("220 stalling ESMTP\r\n"))
				buf := make([]byte, 512)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			})
		}
	})
	addr := ln.Addr().(*net.TCPAddr)
	m, err := New(Config{Host: "127.0.0.1", Port: addr.Port, From: from, TLS: TLSNone, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	data := Data{Name: "myhome", Zone: "box.example.org", Token: "t"}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(150*time.Millisecond, cancel)
	start := time.Now()
	err = m.SendVerification(ctx, "owner@example.net", data)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrSend) || time.Since(start) > 5*time.Second {
		t.Fatalf("cancelled send: %v after %v", err, time.Since(start))
	}

	ctx, cancel = context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start = time.Now()
	if err := m.SendVerification(ctx, "owner@example.net", data); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("send past the deadline: %v after %v", err, time.Since(start))
	}
}

func TestConcurrentSends(t *testing.T) {
	s := smtptest.Start(t)
	m, err := New(plainConfig(s))
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			to := "owner" + string(rune('a'+i)) + "@example.net"
			errs <- m.SendReclamation(context.Background(), to, Data{Name: "myhome", Zone: "box.example.org", Token: "t"})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for range n {
		seen[next(t, s).To[0]] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct recipients", len(seen))
	}
}

func TestNewErrors(t *testing.T) {
	good := Config{Host: "smtp.example.org", From: from}
	tests := []struct {
		name string
		edit func(*Config)
	}{
		{"no host", func(c *Config) { c.Host = "" }},
		{"bad tls mode", func(c *Config) { c.TLS = "ssl" }},
		{"bad port", func(c *Config) { c.Port = 70000 }},
		{"password in the clear", func(c *Config) { c.TLS = TLSNone; c.Username = "u" }},
		{"bad from", func(c *Config) { c.From = "not an address" }},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }},
		{"template syntax", func(c *Config) { c.Templates.ReclamationBody = "{{.Token" }},
		{"unknown field", func(c *Config) { c.Templates.VerificationSubject = "{{.Nmae}}" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.edit(&cfg)
			if _, err := New(cfg); !errors.Is(err, ErrConfig) {
				t.Fatalf("got %v, want ErrConfig", err)
			}
		})
	}
	m, err := New(good)
	if err != nil {
		t.Fatal(err)
	}
	if m.cfg.Port != 587 || m.cfg.TLS != TLSStartTLS || m.cfg.Timeout != DefaultTimeout {
		t.Fatalf("defaults %+v", m.cfg)
	}
}

// TestRefusedBeforeSending: bad input fails without a connection.
func TestRefusedBeforeSending(t *testing.T) {
	s := smtptest.Start(t)
	m, err := New(plainConfig(s))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := m.SendVerification(ctx, "a@b, c@d", Data{Link: "https://x"}); !errors.Is(err, ErrInvalidRecipient) {
		t.Fatalf("two recipients: %v", err)
	}
	if err := m.SendVerification(ctx, "owner\r\nBcc: x@y", Data{Link: "https://x"}); !errors.Is(err, ErrInvalidRecipient) {
		t.Fatalf("header injection: %v", err)
	}
	if err := m.SendVerification(ctx, "owner@example.net", Data{Name: "myhome", Zone: "box.example.org"}); !errors.Is(err, ErrMissingData) {
		t.Fatalf("verification without token: %v", err)
	}
	if err := m.SendReclamation(ctx, "owner@example.net", Data{Name: "myhome", Zone: "box.example.org"}); !errors.Is(err, ErrMissingData) {
		t.Fatalf("reclamation without token: %v", err)
	}
	if s.Received() != 0 {
		t.Fatal("something was sent")
	}
}

func TestVerificationLink(t *testing.T) {
	if got := VerificationLink("box.example.org.", "x y&z"); got != "https://api.box.example.org/verifyemail?s=x+y%26z" {
		t.Fatal(got)
	}
}
