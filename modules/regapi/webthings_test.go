package regapi_test

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/gatehouse-project/gatehouse/internal/testtools/smtptest"
	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/mailer"
)

// smtpNotifier delivers the registry's mails through the real mailer, as
// the Caddy app does.
type smtpNotifier struct{ m *mailer.Mailer }

func (n smtpNotifier) SendVerification(ctx context.Context, to, name, token string) error {
	return n.m.SendVerification(ctx, to, mailer.Data{Name: name, Zone: zone, Token: token})
}

func (n smtpNotifier) SendReclamation(ctx context.Context, to, name, token string) error {
	return n.m.SendReclamation(ctx, to, mailer.Data{Name: name, Zone: zone, Token: token})
}

func newSMTPEnv(t *testing.T, driver string) (*env, *smtptest.Server) {
	s := smtptest.Start(t)
	m, err := mailer.New(mailer.Config{Host: s.Host(), Port: s.Port(), From: "noreply@" + zone, TLS: "none"})
	if err != nil {
		t.Fatal(err)
	}
	return newEnv(t, driver, options{notifier: smtpNotifier{m}}), s
}

var (
	verifyLinkRE = regexp.MustCompile(`/verifyemail\?s=([A-Za-z0-9_%-]+)`)
	uuidRE       = regexp.MustCompile(`\b[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\b`)
)

// The WebThings gateway's own sequence (its certificate-manager.ts):
// /subscribe with name and email, /setemail with the new token, and later,
// on a new gateway, /reclaim and /subscribe with the mailed token as the
// user typed it into the setup page.
func TestWebThingsSetupAndReclaim(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e, smtp := newSMTPEnv(t, driver)
		// The setup page sends the name as typed.
		r := e.get("/subscribe", "name", "  MyHome ", "email", "owner@example.com")
		if r.status != 200 || r.str("name") != "myhome" || r.str("token") == "" {
			t.Fatalf("subscribe: %d %s", r.status, r.body)
		}
		old := r.str("token")
		if n := smtp.Received(); n != 0 {
			t.Fatalf("/subscribe with email sent %d mails, want none", n)
		}
		if info := e.get("/info", "token", old); info.str("email") != "owner@example.com" || info.json["email_verified"] != false {
			t.Fatalf("subscribe did not store the email unverified: %s", info.body)
		}
		if r := e.get("/setemail", "token", old, "email", "owner@example.com", "optout", "0"); r.status != 200 {
			t.Fatalf("setemail: %d %s", r.status, r.body)
		}
		link := verifyLinkRE.FindStringSubmatch(smtp.NextText(t, "owner@example.com"))
		if link == nil {
			t.Fatal("no verification link in the mail")
		}
		if n := smtp.Received(); n != 1 {
			t.Fatalf("%d mails after /setemail, want exactly one", n)
		}
		if r := e.raw("/verifyemail?s=" + link[1]); r.status != 200 {
			t.Fatalf("verify: %d %s", r.status, r.body)
		}

		// A new gateway asks for the name with the owner's email in
		// another case; a stranger's email learns only that it is taken.
		wantError(t, e.get("/subscribe", "name", "myhome", "email", "Owner@Example.com"), 400, "UnavailableNameReclamationPossible")
		wantError(t, e.get("/subscribe", "name", "myhome", "email", "someone@example.com"), 400, "UnavailableName")
		wantError(t, e.get("/reclaim", "name", "nosuch"), 400, "NoSuchName")
		if r := e.get("/reclaim", "name", " MYHOME"); r.status != 200 {
			t.Fatalf("reclaim: %d %s", r.status, r.body)
		}
		rt := uuidRE.FindString(smtp.NextText(t, "owner@example.com"))
		if rt == "" {
			t.Fatal("no lowercase UUID reclamation token in the mail")
		}
		wrong := []byte(rt)
		wrong[0] ^= 1
		wantError(t, e.get("/subscribe", "name", "myhome", "email", "owner@example.com", "reclamationToken", string(wrong)), 400, "ReclamationTokenMismatch")
		// Typed in upper case, with the spaces a paste brings.
		r = e.get("/subscribe", "name", "myhome", "email", "owner@example.com", "reclamationToken", " "+strings.ToUpper(rt)+" ")
		if r.status != 200 || r.str("token") == "" || r.str("token") == old {
			t.Fatalf("subscribe with the upper-case reclamation token: %d %s", r.status, r.body)
		}
		wantError(t, e.get("/ping", "token", old), 404, "NotFound")
		if p := e.get("/ping", "token", r.str("token")); p.status != 200 {
			t.Fatalf("the new token: %d %s", p.status, p.body)
		}
		// Single use.
		wantError(t, e.get("/subscribe", "name", "myhome", "reclamationToken", rt), 400, "ReclamationTokenMismatch")
	})
}
