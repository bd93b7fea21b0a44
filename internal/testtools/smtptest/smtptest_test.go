package smtptest

import (
	"context"
	"crypto/tls"
	"errors"
	"net/mail"
	"net/smtp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const message = "From: Gatehouse <noreply@box.example.org>\r\n" +
	"To: owner@example.net\r\n" +
	"Subject: =?UTF-8?q?Caf=C3=A9?=\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"A line that is long enough to be wrapped by quoted-printable encoding, =\r\n" +
	"with an =3D sign.\r\n"

func TestPlain(t *testing.T) {
	s := Start(t)
	if s.Addr() != s.Host()+":"+strconv.Itoa(s.Port()) || s.Host() != "127.0.0.1" {
		t.Fatalf("addr %s host %s port %d", s.Addr(), s.Host(), s.Port())
	}
	if err := smtp.SendMail(s.Addr(), nil, "noreply@box.example.org", []string{"owner@example.net", "other@example.net"}, []byte(message)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := s.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.From != "noreply@box.example.org" || strings.Join(m.To, ",") != "owner@example.net,other@example.net" || m.TLS || m.Username != "" {
		t.Fatalf("envelope %+v", m)
	}
	if m.Subject() != "Café" || m.Header.Get("To") != "owner@example.net" {
		t.Fatalf("subject %q, header %v", m.Subject(), m.Header)
	}
	text, err := m.Text()
	if err != nil || text != "A line that is long enough to be wrapped by quoted-printable encoding, with an = sign.\n" {
		t.Fatalf("text %q, %v", text, err)
	}
	if s.Received() != 1 {
		t.Fatalf("received %d", s.Received())
	}
}

func TestNextWaits(t *testing.T) {
	s := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next on an empty server: %v", err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		_ = smtp.SendMail(s.Addr(), nil, "a@example.org", []string{"b@example.org"}, []byte("Subject: late\r\n\r\nbody\r\n"))
	}()
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := s.Next(ctx)
	if err != nil || m.Subject() != "late" {
		t.Fatalf("%v, %v", m, err)
	}
}

func TestSTARTTLSAndAuth(t *testing.T) {
	s := Start(t, WithSTARTTLS(), WithAuth("mailer", "secret"))
	send := func(auth smtp.Auth, useTLS bool) error {
		c, err := smtp.Dial(s.Addr())
		if err != nil {
			return err
		}
		defer c.Close()
		if useTLS {
			if err := c.StartTLS(&tls.Config{ServerName: "127.0.0.1", RootCAs: s.CertPool()}); err != nil {
				return err
			}
		}
		if auth != nil {
			if err := c.Auth(auth); err != nil {
				return err
			}
		}
		if err := c.Mail("noreply@box.example.org"); err != nil {
			return err
		}
		if err := c.Rcpt("owner@example.net"); err != nil {
			return err
		}
		w, err := c.Data()
		if err != nil {
			return err
		}
		if _, err := w.Write([]byte("Subject: tls\r\n\r\nhello\r\n")); err != nil {
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
		return c.Quit()
	}
	if err := send(nil, true); err == nil {
		t.Fatal("sent without authenticating")
	}
	if err := send(smtp.PlainAuth("", "mailer", "wrong", "127.0.0.1"), true); err == nil {
		t.Fatal("authenticated with a wrong password")
	}
	if err := send(smtp.PlainAuth("", "mailer", "secret", "127.0.0.1"), true); err != nil {
		t.Fatal(err)
	}
	m, err := s.Next(context.Background())
	if err != nil || !m.TLS || m.Username != "mailer" {
		t.Fatalf("%+v, %v", m, err)
	}
}

func TestImplicitTLS(t *testing.T) {
	s := Start(t, WithImplicitTLS())
	conn, err := tls.Dial("tcp", s.Addr(), &tls.Config{ServerName: "127.0.0.1", RootCAs: s.CertPool()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("a@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@example.org"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: smtps\r\n\r\nhi\r\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	m, err := s.Next(context.Background())
	if err != nil || !m.TLS || m.Subject() != "smtps" {
		t.Fatalf("%+v, %v", m, err)
	}
}

// TestStopWithOpenConnection: a client that never quits does not hold the
// test up (goleak in TestMain checks the goroutines are gone).
func TestStopWithOpenConnection(t *testing.T) {
	s := Start(t)
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("idle.example.org"); err != nil {
		t.Fatal(err)
	}
}

func TestTextOfMultipartBase64(t *testing.T) {
	m := &Message{
		Header: mail.Header{"Content-Type": {`multipart/alternative; boundary="b1"`}},
		Body: []byte("--b1\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n" +
			"--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			"aGVsbG8s\r\nIHdvcmxk\r\n--b1--\r\n"),
	}
	text, err := m.Text()
	if err != nil || text != "hello, world" {
		t.Fatalf("%q, %v", text, err)
	}
	m.Header = mail.Header{"Content-Type": {"text/html"}}
	if _, err := m.Text(); err == nil {
		t.Fatal("html taken for text")
	}
}
