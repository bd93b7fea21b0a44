package pagekite

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// ErrUnknownKite is what Authenticate returns for a domain that has no
// secret; the kite is told "Invalid" with reason "unauthorized".
var ErrUnknownKite = errors.New("pagekite: unknown kite")

// Limits bound what one kite connection may cost. Zero fields take the
// defaults noted.
type Limits struct {
	// MaxHeaderBytes bounds the request head (16 KiB).
	MaxHeaderBytes int
	// MaxKites bounds the X-PageKite headers of one connection (16).
	MaxKites int
	// MaxChunk bounds one chunk from the kite (1 MiB; the kite sends
	// at most about 51 KB of data per chunk).
	MaxChunk int
	// MaxStreams bounds the open streams of one connection (1024).
	MaxStreams int
	// StreamBuffer bounds the bytes a stream holds for a slow reader
	// (512 KiB). A kite that honours SKB stays under about 64 KB; one
	// that overruns the limit gets that stream reset.
	StreamBuffer int
	// SendWindow bounds the bytes sent on a stream that the kite has not
	// yet reported (SKB) as written to its backend (256 KiB).
	SendWindow int
	// HandshakeTimeout bounds reading the request head (10 s).
	HandshakeTimeout time.Duration
	// AddKitesTimeout is how long a connection with no accepted kite may
	// wait for a re-signed request in a NOOP chunk (60 s).
	AddKitesTimeout time.Duration
	// PingInterval is the silence after which we ping the kite (60 s);
	// PingTimeout is how much longer we wait for anything before giving
	// the tunnel up (40 s, the original's grace).
	PingInterval, PingTimeout time.Duration
	// WriteTimeout bounds one write to the kite (60 s).
	WriteTimeout time.Duration
}

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxHeaderBytes, 16<<10)
	def(&l.MaxKites, 16)
	def(&l.MaxChunk, 1<<20)
	def(&l.MaxStreams, 1024)
	def(&l.StreamBuffer, 512<<10)
	def(&l.SendWindow, 256<<10)
	defd(&l.HandshakeTimeout, 10*time.Second)
	defd(&l.AddKitesTimeout, 60*time.Second)
	defd(&l.PingInterval, 60*time.Second)
	defd(&l.PingTimeout, 40*time.Second)
	defd(&l.WriteTimeout, 60*time.Second)
	return l
}

// Server is a PageKite frontend. Set the fields, then call ServeConn for
// each connection that Sniff accepted. Fields must not change after the
// first ServeConn.
type Server struct {
	// Authenticate returns the secret of the kite for domain (lowercase)
	// and proto, or ErrUnknownKite. Required.
	Authenticate func(ctx context.Context, domain, proto string) (secret string, err error)
	// Register receives each accepted kite as a hub.Tunnel. An error
	// refuses the kite, which is told "Duplicate". Required.
	Register func(domain string, t hub.Tunnel) error
	// ChallengeKey keys the SignThis challenges; nil: a random key, so
	// challenges do not survive a restart (kites simply ask again).
	ChallengeKey []byte
	// Now is the clock of the challenges; nil: time.Now.
	Now func() time.Time
	// UUID is sent as X-PageKite-UUID in the ping answer; "": random.
	UUID string
	// Port is the public port reported to the kite in each stream's Port
	// header (443).
	Port int
	// Logger; nil: no logs.
	Logger *zap.Logger
	// Limits; zero fields take defaults.
	Limits Limits

	once   sync.Once
	limits Limits
	chal   *challenger
	log    *zap.Logger
	stats  Stats
}

// Stats are counters of a Server, for metrics and tests.
type Stats struct {
	Sessions, KitesAccepted, KitesRefused atomic.Int64
	PingsFromKite, PongsFromKite          atomic.Int64
	StreamsOpened, StreamOverruns         atomic.Int64
	// PeakStreamBuffer is the most bytes any one stream has held for its
	// reader: what the kite's flow control keeps small.
	PeakStreamBuffer atomic.Int64
}

// Stats returns the server's counters.
func (srv *Server) Stats() *Stats { return &srv.stats }

func (srv *Server) init() {
	srv.once.Do(func() {
		srv.limits = srv.Limits.withDefaults()
		srv.chal = newChallenger(srv.ChallengeKey, srv.Now)
		srv.log = srv.Logger
		if srv.log == nil {
			srv.log = zap.NewNop()
		}
		if srv.UUID == "" {
			var b [16]byte
			_, _ = rand.Read(b[:])
			srv.UUID = hex.EncodeToString(b[:])
		}
		if srv.Port == 0 {
			srv.Port = 443
		}
	})
}

// Magic first bytes of a kite's requests.
const (
	pingPrefix    = "HEAD /ping"
	connectPrefix = "CONNECT PageKite:"
)

// SniffLen is how many first bytes Sniff needs to decide.
const SniffLen = len(connectPrefix)

// Sniff reports whether a connection's first bytes are a kite's plain-text
// request (its frontend check or its tunnel request) rather than a TLS
// ClientHello or anything else. Give it up to SniffLen bytes; fewer (a
// short first read) are judged on what is there, so a caller that gets
// true from a partial prefix should read on before committing.
func Sniff(first []byte) bool {
	if len(first) == 0 {
		return false
	}
	for _, m := range []string{pingPrefix, connectPrefix} {
		n := min(len(first), len(m))
		if string(first[:n]) == m[:n] {
			return true
		}
	}
	return false
}

// Errors of ServeConn.
var (
	ErrNotKite     = errors.New("pagekite: not a kite request")
	ErrNoKites     = errors.New("pagekite: no kite accepted")
	ErrKiteTimeout = errors.New("pagekite: no kite accepted in time")
	ErrKiteClosed  = errors.New("pagekite: kite closed")
	ErrKiteDead    = errors.New("pagekite: kite stopped answering")
)

// ServeConn serves one kite connection until it ends, and closes it. conn
// must yield the connection's bytes from the first one: a listener that
// peeked at them to Sniff must hand over a conn that replays them.
func (srv *Server) ServeConn(ctx context.Context, conn net.Conn) error {
	srv.init()
	defer conn.Close()
	br := bufio.NewReaderSize(conn, 64<<10)
	_ = conn.SetReadDeadline(time.Now().Add(srv.limits.HandshakeTimeout))
	req, err := ReadRequest(br, srv.limits.MaxHeaderBytes)
	if err != nil {
		if errors.Is(err, ErrBadRequest) || errors.Is(err, ErrHeaderTooLarge) {
			srv.badRequest(conn, err)
		}
		return err
	}
	switch {
	case req.Method == "HEAD" && req.Target == "/ping":
		// The kite's frontend check: it reads one recv() and wants this
		// exact status line; the UUID tells it two addresses are one
		// frontend.
		_ = conn.SetWriteDeadline(time.Now().Add(srv.limits.WriteTimeout))
		_, err := fmt.Fprintf(conn, "HTTP/1.1 503 Unavailable\r\nX-PageKite-UUID: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", srv.UUID)
		return err
	case req.Method == "CONNECT" && strings.HasPrefix(req.Target, "PageKite:"):
		return srv.serveKite(ctx, conn, br, req)
	default:
		err := fmt.Errorf("%w: %s %.40q", ErrNotKite, req.Method, req.Target)
		srv.badRequest(conn, err)
		return err
	}
}

func (srv *Server) badRequest(conn net.Conn, err error) {
	body := fmt.Sprintf("{\"error\":%q}\n", err.Error())
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = fmt.Fprintf(conn, "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
}

// kiteRequests collects the X-PageKite (and legacy X-Beanstalk) requests.
func kiteRequests(h Header, max int) ([]KiteRequest, error) {
	var out []KiteRequest
	for _, name := range []string{"X-PageKite", "X-Beanstalk"} {
		for _, v := range h.Values(name) {
			if len(out) == max {
				return nil, fmt.Errorf("%w: more than %d kites", ErrBadRequest, max)
			}
			k, err := ParseKiteRequest(v)
			if err != nil {
				return nil, err
			}
			out = append(out, k)
		}
	}
	return out, nil
}

func hasFeature(h Header, f string) bool {
	for _, name := range []string{"X-PageKite-Features", "X-Beanstalk-Features"} {
		for _, v := range h.Values(name) {
			for p := range strings.SplitSeq(v, ",") {
				if strings.EqualFold(strings.TrimSpace(p), f) {
					return true
				}
			}
		}
	}
	return false
}

func (srv *Server) serveKite(ctx context.Context, conn net.Conn, br *bufio.Reader, req *Request) error {
	reqs, err := kiteRequests(req.Header, srv.limits.MaxKites)
	if err != nil {
		srv.badRequest(conn, err)
		return err
	}
	srv.stats.Sessions.Add(1)
	s := newSession(srv, conn, br, hasFeature(req.Header, "AddKites"))
	res := s.authorize(ctx, reqs)

	var b strings.Builder
	b.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n")
	// We offer AddKites (re-signing inside the tunnel) and not ZChunks.
	b.WriteString("X-PageKite-Features: AddKites\r\n")
	b.WriteString("X-PageKite-Protos: https\r\n")
	b.WriteString("X-PageKite-Ports: " + strconv.Itoa(srv.Port) + "\r\n")
	for _, f := range res.fields {
		b.WriteString(f.Name + ": " + f.Value + "\r\n")
	}
	b.WriteString("\r\n")
	_ = conn.SetWriteDeadline(time.Now().Add(srv.limits.WriteTimeout))
	if _, err := conn.Write([]byte(b.String())); err != nil {
		s.close(err)
		return err
	}
	// As the original: no kite live and none waiting for a signature (or
	// some refused) means there is nothing to wait for.
	if res.ok == 0 && (res.signThis == 0 || res.bad > 0 || !s.addKites) {
		s.close(ErrNoKites)
		return ErrNoKites
	}
	return s.run(ctx)
}
