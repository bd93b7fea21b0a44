// Package smtptest runs a real SMTP server on the loopback interface for
// tests: it accepts every message (optionally behind STARTTLS, implicit TLS
// and AUTH PLAIN), keeps it, and lets the test wait for the next one.
//
// It is for tests only; it delivers nothing and keeps messages in memory.
package smtptest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/gatehouse-project/gatehouse/internal/testtools/testcert"
)

// Message is one message the server accepted.
type Message struct {
	// From and To are the envelope (MAIL FROM, RCPT TO).
	From string
	To   []string
	// Raw is the DATA as received, headers and body.
	Raw []byte
	// Header is Raw's header, parsed with net/mail.
	Header mail.Header
	// Body is Raw's body, still in its transfer encoding.
	Body []byte
	// Helo is the name the client gave in EHLO/HELO.
	Helo string
	// TLS reports whether the session was encrypted when DATA came.
	TLS bool
	// Username is who authenticated, if anyone did.
	Username string
}

// Subject returns the decoded Subject header.
func (m *Message) Subject() string {
	dec := mime.WordDecoder{}
	s, err := dec.DecodeHeader(m.Header.Get("Subject"))
	if err != nil {
		return m.Header.Get("Subject")
	}
	return s
}

// Text returns the message's text/plain content, transfer encoding undone:
// the body itself for a single-part message, the first text/plain part of a
// multipart one.
func (m *Message) Text() (string, error) {
	return textOf(m.Header, m.Body)
}

// header is what textOf needs of a message's or a part's header.
type header interface{ Get(string) string }

func textOf(h header, body []byte) (string, error) {
	ctype := h.Get("Content-Type")
	if ctype == "" {
		ctype = "text/plain"
	}
	mediaType, params, err := mime.ParseMediaType(ctype)
	if err != nil {
		return "", fmt.Errorf("smtptest: content type %q: %w", ctype, err)
	}
	if strings.HasPrefix(mediaType, "multipart/") {
		r := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		for {
			p, err := r.NextRawPart()
			if err != nil {
				return "", fmt.Errorf("smtptest: no text/plain part: %w", err)
			}
			raw, err := io.ReadAll(p)
			if err != nil {
				return "", err
			}
			if text, err := textOf(p.Header, raw); err == nil {
				return text, nil
			}
		}
	}
	if mediaType != "text/plain" {
		return "", fmt.Errorf("smtptest: content type %q is not text/plain", mediaType)
	}
	var r io.Reader = bytes.NewReader(body)
	switch enc := strings.ToLower(h.Get("Content-Transfer-Encoding")); enc {
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, r) // ignores line breaks
	case "", "7bit", "8bit", "binary":
	default:
		return "", fmt.Errorf("smtptest: transfer encoding %q", enc)
	}
	text, err := io.ReadAll(r)
	if err != nil {
		return "", fmt.Errorf("smtptest: decoding body: %w", err)
	}
	return strings.ReplaceAll(string(text), "\r\n", "\n"), nil
}

// Server is a running SMTP server. Start stops it when the test ends.
type Server struct {
	srv      *smtp.Server
	tracker  *trackingListener
	addr     *net.TCPAddr
	username string
	password string
	certPool *x509.CertPool
	served   chan struct{} // closed when Serve returns
	log      *testLogger

	mu       sync.Mutex
	queue    []*Message
	arrived  chan struct{} // signalled (capacity 1) when queue grows
	received int
}

// Option configures a Server.
type Option func(*options)

type options struct {
	startTLS, implicitTLS bool
	username, password    string
}

// WithSTARTTLS offers STARTTLS, with a certificate for 127.0.0.1 and
// localhost that CertPool trusts.
func WithSTARTTLS() Option { return func(o *options) { o.startTLS = true } }

// WithImplicitTLS makes the server speak TLS from the first byte (SMTPS),
// with a certificate that CertPool trusts.
func WithImplicitTLS() Option { return func(o *options) { o.implicitTLS = true } }

// WithAuth requires AUTH PLAIN with these credentials before MAIL FROM. As
// real servers do, it offers AUTH only over TLS.
func WithAuth(username, password string) Option {
	return func(o *options) { o.username, o.password = username, password }
}

// Start starts a server on 127.0.0.1 on a free port; it stops when t ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("smtptest: listen: %v", err)
	}
	// Connections are tracked below TLS: go-smtp must see the *tls.Conn.
	tracker := &trackingListener{Listener: tcp, conns: make(map[*trackedConn]struct{})}
	var ln net.Listener = tracker
	s := &Server{
		addr:     tcp.Addr().(*net.TCPAddr),
		tracker:  tracker,
		username: o.username,
		password: o.password,
		served:   make(chan struct{}),
		arrived:  make(chan struct{}, 1),
	}
	s.srv = smtp.NewServer(smtp.BackendFunc(s.newSession))
	s.srv.Domain = "smtptest.localhost"
	s.srv.ReadTimeout = 10 * time.Second
	s.srv.WriteTimeout = 10 * time.Second
	s.srv.MaxMessageBytes = 1 << 20
	s.log = &testLogger{t: t}
	s.srv.ErrorLog = s.log
	if o.startTLS || o.implicitTLS {
		cfg, pool, err := selfSigned()
		if err != nil {
			ln.Close()
			t.Fatalf("smtptest: certificate: %v", err)
		}
		s.certPool = pool
		if o.startTLS {
			s.srv.TLSConfig = cfg
		}
		if o.implicitTLS {
			ln = tls.NewListener(ln, cfg)
		}
	}
	go func() {
		defer close(s.served)
		_ = s.srv.Serve(ln)
	}()
	t.Cleanup(s.stop)
	return s
}

// stop closes the listener and every connection and waits for the
// server's goroutines, so tests can check for leaks.
func (s *Server) stop() {
	_ = s.srv.Close()
	// go-smtp only closes the listeners Serve has registered; if Serve has
	// not started yet it would accept forever.
	_ = s.tracker.Listener.Close()
	<-s.served
	// A connection accepted as Close ran may not be known to go-smtp yet.
	s.tracker.closeAll()
	s.tracker.wg.Wait()
	s.log.stop()
}

// Addr returns "127.0.0.1:port".
func (s *Server) Addr() string { return s.addr.String() }

// Host returns the address the server listens on, "127.0.0.1".
func (s *Server) Host() string { return s.addr.IP.String() }

// Port returns the port the server listens on.
func (s *Server) Port() int { return s.addr.Port }

// CertPool returns a pool trusting the server's certificate; nil without
// TLS.
func (s *Server) CertPool() *x509.CertPool { return s.certPool }

// Received returns how many messages the server has accepted so far.
func (s *Server) Received() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.received
}

// Next returns the oldest message not yet returned, waiting for one until
// ctx ends.
func (s *Server) Next(ctx context.Context) (*Message, error) {
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			m := s.queue[0]
			s.queue = s.queue[1:]
			s.mu.Unlock()
			return m, nil
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("smtptest: waiting for a message: %w", ctx.Err())
		case <-s.arrived:
		}
	}
}

// NextText waits up to 20 seconds for the next message, checks that it is
// addressed to to, and returns its text; anything else fails t.
func (s *Server) NextText(t testing.TB, to string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("no mail: %v", err)
	}
	if !slices.Contains(m.To, to) {
		t.Fatalf("mail to %v, want %s", m.To, to)
	}
	text, err := m.Text()
	if err != nil {
		t.Fatal(err)
	}
	return text
}

func (s *Server) deliver(m *Message) {
	s.mu.Lock()
	s.queue = append(s.queue, m)
	s.received++
	s.mu.Unlock()
	select {
	case s.arrived <- struct{}{}:
	default:
	}
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{srv: s, conn: c}, nil
}

// session is one SMTP transaction at a time on one connection.
type session struct {
	srv      *Server
	conn     *smtp.Conn
	username string
	from     string
	to       []string
}

func (ss *session) AuthMechanisms() []string {
	if ss.srv.username == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if ss.srv.username == "" || mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != ss.srv.username || password != ss.srv.password || (identity != "" && identity != username) {
			return smtp.ErrAuthFailed
		}
		ss.username = username
		return nil
	}), nil
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.srv.username != "" && ss.username == "" {
		return smtp.ErrAuthRequired
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "unparsable message: " + err.Error()}
	}
	body, err := io.ReadAll(msg.Body)
	if err != nil {
		return err
	}
	_, isTLS := ss.conn.TLSConnectionState()
	ss.srv.deliver(&Message{
		From: ss.from, To: ss.to, Raw: raw, Header: msg.Header, Body: body,
		Helo: ss.conn.Hostname(), TLS: isTLS, Username: ss.username,
	})
	return nil
}

func (ss *session) Reset() {
	ss.from = ""
	ss.to = nil
}

func (ss *session) Logout() error { return nil }

// trackingListener keeps the accepted connections until they are closed,
// so stop can close them all and wait for the goroutines serving them.
type trackingListener struct {
	net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[tc] = struct{}{}
	l.mu.Unlock()
	l.wg.Add(1)
	return tc, nil
}

func (l *trackingListener) closeAll() {
	l.mu.Lock()
	conns := make([]*trackedConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

type trackedConn struct {
	net.Conn
	once sync.Once
	l    *trackingListener
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		c.l.wg.Done()
	})
	return err
}

// testLogger sends the server's complaints to the test log while the test
// runs, and drops them after (logging then would panic).
type testLogger struct {
	mu      sync.Mutex
	t       testing.TB
	stopped bool
}

func (l *testLogger) Printf(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.t.Logf("smtptest: "+format, v...)
	}
}

func (l *testLogger) Println(v ...any) {
	l.Printf("%s", strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}

func (l *testLogger) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
}

// selfSigned returns a server TLS config with a fresh certificate for
// 127.0.0.1 and localhost, and a pool that trusts it.
func selfSigned() (*tls.Config, *x509.CertPool, error) {
	c, err := testcert.SelfSigned(testcert.Options{
		Subject:     pkix.Name{CommonName: "smtptest"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	})
	if err != nil {
		return nil, nil, err
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{c.TLS()},
		MinVersion:   tls.VersionTLS12,
	}
	return cfg, c.Pool(), nil
}

var _ smtp.AuthSession = (*session)(nil)
