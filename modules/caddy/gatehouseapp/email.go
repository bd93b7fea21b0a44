package gatehouseapp

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/gatehouse-project/gatehouse/modules/mailer"
)

// EmailConfig is the SMTP server and the links the mails carry.
type EmailConfig struct {
	// SMTP is the server's host:port.
	SMTP string `json:"smtp"`
	// Username and Password authenticate to the server, when it asks.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// From is the sender address.
	From string `json:"from"`
	// TLS is "starttls" (default), "tls" (implicit, port 465) or "none".
	TLS string `json:"tls,omitempty"`
	// APIURL is the public base URL of the registration API, used in the
	// verification link (default https://api.ZONE).
	APIURL string `json:"api_url,omitempty"`
	// Templates override the default subjects and bodies (text/template
	// with .Name, .FQDN, .Link, .Token and .Zone).
	Templates mailer.Templates `json:"templates,omitzero"`
	// Timeout bounds one delivery (default 30s).
	Timeout caddy.Duration `json:"timeout,omitempty"`

	mailer *mailer.Mailer
}

func (e *EmailConfig) provision(repl *caddy.Replacer) error {
	for _, s := range []*string{&e.SMTP, &e.Username, &e.Password, &e.From, &e.APIURL} {
		*s = repl.ReplaceKnown(*s, "")
	}
	host, portStr, err := net.SplitHostPort(e.SMTP)
	if err != nil {
		return fmt.Errorf("gatehouse email: smtp %q: want host:port", e.SMTP)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		return fmt.Errorf("gatehouse email: bad port in %q", e.SMTP)
	}
	if e.From == "" {
		return fmt.Errorf("gatehouse email: from is required")
	}
	if e.APIURL != "" {
		if u, err := url.Parse(e.APIURL); err != nil || u.Scheme == "" || u.Host == "" {
			return fmt.Errorf("gatehouse email: api_url %q is not an absolute URL", e.APIURL)
		}
	}
	if e.TLS == "" {
		e.TLS = "starttls"
	}
	cfg := mailer.Config{
		Host: host, Port: port, Username: e.Username, Password: e.Password,
		From: e.From, TLS: e.TLS, Timeout: time.Duration(e.Timeout), Templates: e.Templates,
	}
	e.mailer, err = mailer.New(cfg)
	if err != nil {
		return fmt.Errorf("gatehouse email: %w", err)
	}
	return nil
}

// notifier adapts the mailer to the registry's Notifier.
func (e *EmailConfig) notifier(zone string) *notifier {
	base := strings.TrimSuffix(e.APIURL, "/")
	if base == "" {
		base = "https://api." + zone
	}
	return &notifier{m: e.mailer, zone: zone, base: base}
}

type notifier struct {
	m    *mailer.Mailer
	zone string
	base string
}

func (n *notifier) data(name, token string) mailer.Data {
	return mailer.Data{Name: name, FQDN: name + "." + n.zone, Zone: n.zone, Token: token,
		Link: n.base + "/verifyemail?s=" + url.QueryEscape(token)}
}

func (n *notifier) SendVerification(ctx context.Context, to, name, token string) error {
	return n.m.SendVerification(ctx, to, n.data(name, token))
}

func (n *notifier) SendReclamation(ctx context.Context, to, name, token string) error {
	return n.m.SendReclamation(ctx, to, n.data(name, token))
}

func (e *EmailConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		key := d.Val()
		var dst *string
		switch key {
		case "smtp":
			dst = &e.SMTP
		case "username":
			dst = &e.Username
		case "password":
			dst = &e.Password
		case "from":
			dst = &e.From
		case "tls":
			dst = &e.TLS
		case "api_url":
			dst = &e.APIURL
		case "template":
			if err := e.parseTemplate(d); err != nil {
				return err
			}
			continue
		case "timeout":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			e.Timeout = dur
			continue
		default:
			return d.Errf("unrecognized email option %q", key)
		}
		if !d.AllArgs(dst) {
			return d.ArgErr()
		}
	}
	if e.SMTP == "" || e.From == "" {
		return d.Errf("email: smtp and from are required")
	}
	return nil
}

// parseTemplate reads `template <kind> <file>`: the file's text replaces
// one default subject or body.
func (e *EmailConfig) parseTemplate(d *caddyfile.Dispenser) error {
	var kind, file string
	if !d.AllArgs(&kind, &file) {
		return d.ArgErr()
	}
	dst := map[string]*string{
		"verification_subject": &e.Templates.VerificationSubject,
		"verification_body":    &e.Templates.VerificationBody,
		"reclamation_subject":  &e.Templates.ReclamationSubject,
		"reclamation_body":     &e.Templates.ReclamationBody,
	}[kind]
	if dst == nil {
		return d.Errf("template: unknown kind %q (verification_subject, verification_body, reclamation_subject, reclamation_body)", kind)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return d.Errf("template %s: %v", kind, err)
	}
	*dst = string(b)
	return nil
}
