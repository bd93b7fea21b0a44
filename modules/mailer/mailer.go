// Package mailer sends Gatehouse's two mails over SMTP: the email
// verification link, and the single-use reclamation token that moves a name
// to a new gateway. Subjects and bodies are text/template templates with
// defaults; the mails are plain text.
//
// It sends and nothing else: it does not decide who may receive a mail, nor
// rate-limit, nor queue and retry (the registration API does the first two
// and answers with an error when sending fails). It knows nothing of Caddy.
package mailer

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"strings"
	"text/template"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// TLS modes.
const (
	// TLSNone sends in the clear; only sensible for a relay on the same
	// host. Authentication is refused in this mode.
	TLSNone = "none"
	// TLSStartTLS requires STARTTLS (submission, port 587).
	TLSStartTLS = "starttls"
	// TLSImplicit speaks TLS from the start (submissions, port 465).
	TLSImplicit = "tls"
)

// Defaults.
const (
	DefaultTimeout = 30 * time.Second
)

// Errors that callers branch on.
var (
	// ErrConfig: the configuration is incomplete or invalid.
	ErrConfig = errors.New("mailer: invalid configuration")
	// ErrInvalidRecipient: the address to send to does not parse.
	ErrInvalidRecipient = errors.New("mailer: invalid recipient address")
	// ErrMissingData: the data lacks what the mail must say.
	ErrMissingData = errors.New("mailer: missing mail data")
	// ErrSend: the SMTP exchange failed; the error wraps the cause.
	ErrSend = errors.New("mailer: sending failed")
)

// Config says how to reach the SMTP server and what to write.
type Config struct {
	// Host is the SMTP server's host name (also the name its
	// certificate must carry).
	Host string `json:"host,omitempty"`
	// Port defaults to 587 with starttls, 465 with tls and 25 with none.
	Port int `json:"port,omitempty"`
	// Username and Password authenticate to the server when Username is
	// set, with the strongest mechanism it offers over TLS.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// From is the sender, an address or "Name <address>".
	From string `json:"from,omitempty"`
	// TLS is "starttls" (the default), "tls" or "none".
	TLS string `json:"tls,omitempty"`
	// HelloName is the name given in EHLO; the host name by default.
	HelloName string `json:"hello_name,omitempty"`
	// Timeout bounds one send, connection to QUIT; DefaultTimeout when
	// zero.
	Timeout time.Duration `json:"timeout,omitempty"`
	// TLSConfig overrides the TLS client settings, for a private CA say;
	// its ServerName defaults to Host.
	TLSConfig *tls.Config `json:"-"`
	// Templates overrides the default subjects and bodies.
	Templates Templates `json:"templates,omitzero"`
}

// Templates are text/template sources executed with Data. An empty field
// keeps the default. Subjects are folded onto one line.
type Templates struct {
	VerificationSubject string `json:"verification_subject,omitempty"`
	VerificationBody    string `json:"verification_body,omitempty"`
	ReclamationSubject  string `json:"reclamation_subject,omitempty"`
	ReclamationBody     string `json:"reclamation_body,omitempty"`
}

// Default templates.
const (
	DefaultVerificationSubject = `Confirm your email address for {{.FQDN}}`
	DefaultVerificationBody    = `Hello,

This address was given as the contact of the gateway {{.FQDN}}.
With a confirmed address, you can move the name {{.Name}} to a new
gateway if this one is ever replaced.

To confirm, open this link:

{{.Link}}

If you did not expect this message, ignore it: the address will not be
confirmed.
`
	DefaultReclamationSubject = `Your reclamation token for {{.FQDN}}`
	DefaultReclamationBody    = `Hello,

Someone asked to move the name {{.FQDN}} to a new gateway.

Your single-use reclamation token for {{.Name}} is:

{{.Token}}

Enter it in the setup page of the new gateway. Once it is used, the
current gateway loses the name.

If you did not ask for this, ignore this message: the name stays where
it is.
`
)

// Data fills the templates.
type Data struct {
	// Name is the gateway's name, "myhome".
	Name string
	// FQDN is NAME.ZONE, "myhome.box.example.org"; derived from Name and
	// Zone when empty.
	FQDN string
	// Link is the verification link; derived from Zone and Token when
	// empty (see VerificationLink).
	Link string
	// Token is the verification or reclamation token.
	Token string
	// Zone is the Gatehouse zone, "box.example.org".
	Zone string
}

// VerificationLink returns the link that confirms an email address:
// https://api.ZONE/verifyemail?s=TOKEN.
func VerificationLink(zone, token string) string {
	u := url.URL{
		Scheme:   "https",
		Host:     "api." + strings.TrimSuffix(zone, "."),
		Path:     "/verifyemail",
		RawQuery: url.Values{"s": {token}}.Encode(),
	}
	return u.String()
}

// Mailer sends the mails. It is safe for concurrent use: each send uses its
// own SMTP connection.
type Mailer struct {
	cfg          Config
	from         *mail.Address
	verification mailTemplate
	reclamation  mailTemplate
}

type mailTemplate struct {
	subject, body *template.Template
}

// New checks cfg, fills in its defaults and parses the templates.
func New(cfg Config) (*Mailer, error) {
	if cfg.Host == "" {
		return nil, fmt.Errorf("%w: host is required", ErrConfig)
	}
	if cfg.TLS == "" {
		cfg.TLS = TLSStartTLS
	}
	defaultPort := map[string]int{TLSNone: 25, TLSStartTLS: 587, TLSImplicit: 465}[cfg.TLS]
	if defaultPort == 0 {
		return nil, fmt.Errorf("%w: tls mode %q (want none, starttls or tls)", ErrConfig, cfg.TLS)
	}
	if cfg.Port == 0 {
		cfg.Port = defaultPort
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("%w: port %d", ErrConfig, cfg.Port)
	}
	if cfg.Username != "" && cfg.TLS == TLSNone {
		// Passwords do not cross the network in the clear.
		return nil, fmt.Errorf("%w: authentication needs tls mode starttls or tls", ErrConfig)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("%w: negative timeout", ErrConfig)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("%w: from %q: %w", ErrConfig, cfg.From, err)
	}
	m := &Mailer{cfg: cfg, from: from}
	t := cfg.Templates
	if m.verification, err = parseTemplates("verification",
		or(t.VerificationSubject, DefaultVerificationSubject), or(t.VerificationBody, DefaultVerificationBody)); err != nil {
		return nil, err
	}
	if m.reclamation, err = parseTemplates("reclamation",
		or(t.ReclamationSubject, DefaultReclamationSubject), or(t.ReclamationBody, DefaultReclamationBody)); err != nil {
		return nil, err
	}
	return m, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// parseTemplates parses a subject and a body and tries them on sample data,
// so that a misspelt field fails at startup rather than at the first mail.
func parseTemplates(name, subject, body string) (mailTemplate, error) {
	var mt mailTemplate
	var err error
	if mt.subject, err = template.New(name + " subject").Parse(subject); err != nil {
		return mt, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if mt.body, err = template.New(name + " body").Parse(body); err != nil {
		return mt, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	sample := Data{Name: "name", FQDN: "name.zone", Link: "https://api.zone/verifyemail?s=t", Token: "t", Zone: "zone"}
	if _, _, err := mt.render(sample); err != nil {
		return mt, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return mt, nil
}

func (mt mailTemplate) render(d Data) (subject, body string, err error) {
	var sb, bb bytes.Buffer
	if err := mt.subject.Execute(&sb, d); err != nil {
		return "", "", err
	}
	if err := mt.body.Execute(&bb, d); err != nil {
		return "", "", err
	}
	// A subject is one header line: fold whatever the template produced.
	return strings.Join(strings.Fields(sb.String()), " "), bb.String(), nil
}

// SendVerification mails to the link that confirms the address. It needs
// data.Link, or data.Zone and data.Token to derive it.
func (m *Mailer) SendVerification(ctx context.Context, to string, data Data) error {
	data = complete(data)
	if data.Link == "" && data.Zone != "" && data.Token != "" {
		data.Link = VerificationLink(data.Zone, data.Token)
	}
	if data.Link == "" {
		return fmt.Errorf("%w: verification needs a link, or a zone and a token", ErrMissingData)
	}
	return m.send(ctx, "verification", m.verification, to, data)
}

// SendReclamation mails the single-use reclamation token for a name. It
// needs data.Token and data.Name (or data.FQDN).
func (m *Mailer) SendReclamation(ctx context.Context, to string, data Data) error {
	data = complete(data)
	if data.Token == "" || (data.Name == "" && data.FQDN == "") {
		return fmt.Errorf("%w: reclamation needs a token and a name", ErrMissingData)
	}
	return m.send(ctx, "reclamation", m.reclamation, to, data)
}

// complete derives FQDN from Name and Zone, and tidies the trailing dots
// that fully-qualified zone names carry.
func complete(d Data) Data {
	d.Zone = strings.TrimSuffix(d.Zone, ".")
	d.FQDN = strings.TrimSuffix(d.FQDN, ".")
	if d.FQDN == "" && d.Name != "" && d.Zone != "" {
		d.FQDN = d.Name + "." + d.Zone
	}
	return d
}

// send renders and sends one mail over its own connection.
func (m *Mailer) send(ctx context.Context, kind string, mt mailTemplate, to string, data Data) error {
	rcpt, err := mail.ParseAddress(to)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRecipient, err)
	}
	subject, body, err := mt.render(data)
	if err != nil {
		return fmt.Errorf("mailer: rendering the %s mail: %w", kind, err)
	}
	msg := m.message(rcpt, subject, body)
	d := &dialer{ctx: ctx}
	client, err := m.client(ctx, d)
	if err != nil {
		return fmt.Errorf("%w: %s mail: %w", ErrSend, kind, err)
	}
	defer d.release()
	if err := deliver(ctx, client, msg); err != nil {
		return fmt.Errorf("%w: %s mail: %w", ErrSend, kind, err)
	}
	return nil
}

// message builds the MIME message.
func (m *Mailer) message(to *mail.Address, subject, body string) *gomail.Msg {
	// Plain ASCII with short lines goes as is, so that the link and the
	// token stay whole for any reader; anything else is quoted-printable.
	// (go-mail labels unencoded bodies "8bit", which 7-bit content
	// satisfies; its "7bit" encoding quoted-printable-encodes the body
	// while labelling it 7bit.)
	enc := gomail.EncodingQP
	if isSevenBit(body) {
		enc = gomail.NoEncoding
	}
	msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent(), gomail.WithEncoding(enc))
	msg.FromMailAddress(m.from)
	msg.ToMailAddress(to)
	msg.Subject(subject)
	msg.SetDate()
	// The Message-ID carries the sender's domain, not this host's name,
	// which says nothing useful to the receiver.
	domain := m.from.Address[strings.LastIndexByte(m.from.Address, '@')+1:]
	msg.SetMessageIDWithValue(rand.Text() + "@" + domain)
	// RFC 3834: automatic mail; vacation responders must not answer it.
	msg.SetGenHeader("Auto-Submitted", "auto-generated")
	msg.SetGenHeader(gomail.HeaderXAutoResponseSuppress, "All")
	msg.SetBodyString(gomail.TypeTextPlain, body)
	return msg
}

// isSevenBit reports whether body can travel unencoded: ASCII without
// control characters other than line breaks and tabs, lines within the
// 998 octets of RFC 5322 §2.1.1.
func isSevenBit(body string) bool {
	for line := range strings.Lines(body) {
		if len(line) > 998 {
			return false
		}
		for i := range len(line) {
			c := line[i]
			if c >= 0x7f || (c < ' ' && c != '\t' && c != '\n' && c != '\r') {
				return false
			}
		}
	}
	return true
}

// client prepares a go-mail client for one send, dialling through d. A
// fresh client per send keeps sends independent: go-mail clients carry
// per-connection state.
func (m *Mailer) client(ctx context.Context, d *dialer) (*gomail.Client, error) {
	timeout := m.cfg.Timeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if timeout <= 0 {
		return nil, context.DeadlineExceeded
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if m.cfg.TLSConfig != nil {
		tlsCfg = m.cfg.TLSConfig.Clone()
	}
	if tlsCfg.ServerName == "" {
		tlsCfg.ServerName = m.cfg.Host
	}
	d.implicitTLS = m.cfg.TLS == TLSImplicit
	d.tlsConfig = tlsCfg
	opts := []gomail.Option{
		gomail.WithPort(m.cfg.Port),
		gomail.WithTimeout(timeout),
		gomail.WithTLSConfig(tlsCfg),
		gomail.WithDialContextFunc(d.dial),
	}
	if m.cfg.TLS == TLSStartTLS {
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	} else {
		// No STARTTLS in the clear mode, nor on top of implicit TLS,
		// which the dialer does.
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	}
	if m.cfg.HelloName != "" {
		opts = append(opts, gomail.WithHELO(m.cfg.HelloName))
	}
	if m.cfg.Username != "" {
		// New allows credentials only with TLS, and PLAIN and LOGIN in
		// go-mail refuse to run on a connection that is not encrypted.
		opts = append(opts,
			gomail.WithOpportunisticSMTPAuth(
				gomail.SMTPAuthSCRAMSHA256PLUS, gomail.SMTPAuthSCRAMSHA256,
				gomail.SMTPAuthSCRAMSHA1PLUS, gomail.SMTPAuthSCRAMSHA1,
				gomail.SMTPAuthPlain, gomail.SMTPAuthLogin),
			gomail.WithUsername(m.cfg.Username),
			gomail.WithPassword(m.cfg.Password))
	}
	return gomail.NewClient(m.cfg.Host, opts...)
}

// dialer connects for one send and ties the connection to the caller's
// context: go-mail watches a context only while dialling, so without this a
// cancelled send would go on until its timeout.
type dialer struct {
	ctx         context.Context
	implicitTLS bool
	tlsConfig   *tls.Config
	conn        net.Conn    // the TCP connection, once dialled
	stop        func() bool // unhooks the close-on-cancel
}

func (d *dialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.conn = conn
	// d.ctx, not ctx: go-mail cancels the dial context once connected.
	d.stop = context.AfterFunc(d.ctx, func() { _ = conn.Close() })
	if !d.implicitTLS {
		return conn, nil
	}
	tc := tls.Client(conn, d.tlsConfig)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	// go-mail and its SMTP client recognise a *tls.Conn as encrypted.
	return tc, nil
}

// release closes the connection whatever happened: go-mail leaves it open
// when the exchange fails before the message (EHLO, STARTTLS, AUTH).
func (d *dialer) release() {
	if d.stop != nil {
		d.stop()
	}
	if d.conn != nil {
		_ = d.conn.Close()
	}
}

// deliver dials, sends and quits.
func deliver(ctx context.Context, client *gomail.Client, msg *gomail.Msg) error {
	conn, err := client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		return withCause(ctx, err)
	}
	if err := client.SendWithSMTPClient(conn, msg); err != nil {
		_ = conn.Close()
		return withCause(ctx, err)
	}
	// The message is accepted once DATA is answered; a failed QUIT does not
	// undo that, so it is not worth an error.
	_ = client.CloseWithSMTPClient(conn)
	return nil
}

// withCause adds the context's error to err when the context ended, so
// callers can tell a cancelled send from a refused one.
func withCause(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
		return fmt.Errorf("%w: %w", cause, err)
	}
	return err
}
