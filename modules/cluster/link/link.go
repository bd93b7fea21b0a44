// Package link is the authenticated node-to-node link of a Gatehouse
// cluster: one multiplexed tunnel.Session per pair of nodes, over the sealed
// transport (tunnel.SealedUpgrade, keyed from the mutual TLS connection; the
// raw transport or a WebSocket with nodes of older releases) on mutual TLS
// whose certificates a cluster CA issued, so that a node can reach a gateway
// whose tunnel another node holds.
//
// Both ends present a certificate of the cluster CA. A certificate from
// any other CA fails the TLS handshake. The dialing node checks that the
// server's certificate names the node it meant to reach; the accepting
// node checks that the client's certificate names a live member, and that
// the name the client gives in the tunnel handshake is that one.
//
// A Relay is the hub.Tunnel of a gateway held by another node: its Open
// opens a stream on the link to that node, carrying the stream's
// tunnel.Meta. The receiving node looks the gateway up in its Local tunnels,
// opens the real stream there and relays the bytes untouched (so the
// gateway's TLS stays end to end) with relay.Conns; each leg has its own
// credit flow control, and the relay copies only as fast as the next leg
// accepts, so a slow reader at either end holds the other back.
//
// The package knows nothing of PostgreSQL or Caddy: Peers (the cluster
// membership) says who is a live member and where it listens.
package link

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/gatehouse-project/gatehouse/modules/relay"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// Sentinel errors.
var (
	// ErrInvalid: the Config cannot be used.
	ErrInvalid = errors.New("invalid link configuration")
	// ErrNoPeer: the node to reach is not a live member.
	ErrNoPeer = errors.New("not a live cluster member")
	// ErrClosed: the link or relay is closed.
	ErrClosed = errors.New("link closed")
)

// Path is the HTTP path of the link's upgrade.
const Path = "/v1/link"

// KindRelay is the Kind of a Relay.
const KindRelay = "relay"

// Reasons a receiving node gives when it refuses a link stream.
const (
	ReasonNotHere = "gateway not held by this node"
	ReasonOffline = "target gateway offline"
	// ReasonNotMember: the opening node is no longer a live member.
	ReasonNotMember = "not a live cluster member"
)

// handshakeKey fills the tunnel handshake's key, which the protocol
// requires: the link authenticates by certificate, not by key.
const handshakeKey = "mtls"

// Peers is the cluster membership as the link needs it.
// *cluster.Member implements it.
type Peers interface {
	// Peer returns the link address of the live member called name.
	Peer(name string) (linkAddr string, ok bool)
}

// Local holds the tunnels of this node, by gateway name.
type Local interface {
	Lookup(name string) (hub.Tunnel, bool)
}

// Config sets a Link up.
type Config struct {
	// Name is this node's name, as in its certificate and the cluster.
	Name string
	// Cert is this node's certificate (with its key), issued by the
	// cluster CA for Name, valid for both client and server
	// authentication. Certificate, when set, takes its place: the link
	// asks it on every handshake (a renewed or rotated certificate).
	Cert        tls.Certificate
	Certificate CertFunc
	// CA holds the cluster CA's certificate: the only one trusted.
	CA *x509.CertPool
	// Peers says who is a member and where it listens.
	Peers Peers
	// Local opens the streams other nodes relay to this node's gateways.
	// Nil refuses them all.
	Local Local
	// Tunnel tunes the link sessions; zero fields take the defaults.
	Tunnel tunnel.Config
	// WebSocketOnly makes the link offer and accept only the WebSocket, as
	// nodes of older releases did (for tests of a rolling upgrade).
	WebSocketOnly bool
	// NoSealed makes the link offer and accept the raw transport and the
	// WebSocket but not the sealed transport, as nodes of the release
	// before it did (for tests of a rolling upgrade).
	NoSealed bool
	// OpenTimeout bounds the opening of a relayed stream on the local
	// tunnel. Default 10s.
	OpenTimeout time.Duration
	// Logger receives sessions and refusals. Nil discards them.
	Logger *slog.Logger
}

// Stats are the link's counters, for metrics.
type Stats struct {
	// Sessions is the number of live link sessions.
	Sessions int
	// StreamsOut and StreamsIn count relayed streams opened toward other
	// nodes and accepted from them; Refused counts those refused here.
	StreamsOut, StreamsIn, Refused uint64
	// BytesIn and BytesOut count the bytes relayed to local tunnels from
	// other nodes, and back.
	BytesIn, BytesOut uint64
}

// Link is this node's end of the links to every other node. Its methods
// are safe for concurrent use.
type Link struct {
	cfg       Config
	log       *slog.Logger
	serverTLS *tls.Config
	srv       *http.Server

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	sessions map[string]*tunnel.Session // by peer name
	dialing  map[string]*dialCall
	relays   map[string]*Relay
	// early holds the live sessions on the raw or the sealed transport:
	// their peer is of a release that reads the early-data length in a
	// stream's Meta.
	early map[*tunnel.Session]bool

	streamsOut, streamsIn, refused, bytesIn, bytesOut atomic.Uint64

	creds atomic.Pointer[credentials]
}

// credentials are what the link authenticates with, swapped whole on a
// reload.
type credentials struct {
	cert CertFunc
	ca   *x509.CertPool
}

// Certificate returns the leaf of the certificate new link sessions
// present (renewed first when due), for metrics.
func (l *Link) Certificate() (*x509.Certificate, error) {
	c, err := l.creds.Load().cert()
	if err != nil {
		return nil, err
	}
	return leaf(c)
}

// SetCredentials makes new link sessions present the certificates of
// cert and trust only ca (a configuration reload that keeps the running
// link); the sessions already open carry on.
func (l *Link) SetCredentials(cert CertFunc, ca *x509.CertPool) {
	l.creds.Store(&credentials{cert: cert, ca: ca})
}

// dialCall is a dial in progress, shared by the Opens that wait for it.
type dialCall struct {
	done chan struct{}
	s    *tunnel.Session
	err  error
}

// New checks cfg and returns a Link; Serve accepts other nodes on it.
func New(cfg Config) (*Link, error) {
	switch {
	case cfg.Name == "":
		return nil, fmt.Errorf("%w: no node name", ErrInvalid)
	case len(cfg.Cert.Certificate) == 0 && cfg.Certificate == nil:
		return nil, fmt.Errorf("%w: no certificate", ErrInvalid)
	case cfg.CA == nil:
		return nil, fmt.Errorf("%w: no cluster CA", ErrInvalid)
	case cfg.Peers == nil:
		return nil, fmt.Errorf("%w: no peers", ErrInvalid)
	}
	if err := tunnel.VerifyConfig(cfg.Tunnel); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	cfg.Tunnel = cfg.Tunnel.WithDefaults()
	cfg.Name = strings.ToLower(cfg.Name)
	if cfg.OpenTimeout == 0 {
		cfg.OpenTimeout = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Link{
		cfg:      cfg,
		log:      log.With("node", cfg.Name),
		sessions: make(map[string]*tunnel.Session),
		dialing:  make(map[string]*dialCall),
		relays:   make(map[string]*Relay),
		early:    make(map[*tunnel.Session]bool),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	certFunc := cfg.Certificate
	if certFunc == nil {
		static := cfg.Cert
		certFunc = func() (*tls.Certificate, error) { return &static, nil }
	}
	l.SetCredentials(certFunc, cfg.CA)
	l.serverTLS = &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return l.creds.Load().cert() },
		ClientAuth:     tls.RequireAndVerifyClientCert,
		MinVersion:     tls.VersionTLS13,
		// The cluster CA may change on a reload: each handshake takes
		// the current one.
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := l.serverTLS.Clone()
			c.GetConfigForClient = nil
			c.ClientCAs = l.creds.Load().ca
			return c, nil
		},
		// After the chain is verified against the cluster CA: the
		// client must be a live member, named in its certificate.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no client certificate")
			}
			if peerName(cs.PeerCertificates[0], cfg.Peers) == "" {
				return fmt.Errorf("client certificate names no live cluster member: %w", ErrNoPeer)
			}
			return nil
		},
	}
	mux := http.NewServeMux()
	mux.HandleFunc(Path, l.serveLink)
	l.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return l.ctx },
	}
	return l, nil
}

// peerName is the first DNS name of cert that names a live member.
func peerName(cert *x509.Certificate, peers Peers) string {
	for _, n := range cert.DNSNames {
		if _, ok := peers.Peer(strings.ToLower(n)); ok {
			return strings.ToLower(n)
		}
	}
	return ""
}

// Serve accepts other nodes' links on ln (a plain TCP listener: Serve
// runs the TLS) until Close; then it returns nil.
func (l *Link) Serve(ln net.Listener) error {
	err := l.srv.Serve(tls.NewListener(batchListener{ln}, l.serverTLS))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// batchListener makes each accepted connection a tunnel.BatchConn, under
// the TLS: on the raw transport each frame then leaves in one write instead
// of one per TLS record, four system calls per full Data frame. (The sealed
// transport writes the socket under the BatchConn, in batches of its own.)
type batchListener struct{ net.Listener }

func (b batchListener) Accept() (net.Conn, error) {
	c, err := b.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tunnel.NewBatchConn(c), nil
}

// acceptRaw answers an upgrade that offers tunnel.RawUpgrade, as
// tunnel.AcceptTransport does, but with the connection's BatchConn (see
// batchListener) under the raw transport.
func acceptRaw(w http.ResponseWriter) (tunnel.Conn, error) {
	w.Header().Set("Connection", "Upgrade")
	w.Header().Set("Upgrade", tunnel.RawUpgrade)
	w.WriteHeader(http.StatusSwitchingProtocols)
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, fmt.Errorf("raw upgrade: hijack: %w", err)
	}
	if err := brw.Flush(); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("raw upgrade: %w", err)
	}
	// The server's header timeout was for the request; the session has
	// its own keepalive.
	_ = nc.SetDeadline(time.Time{})
	var rd io.Reader = nc
	if n := brw.Reader.Buffered(); n > 0 {
		rd = io.MultiReader(io.LimitReader(brw.Reader, int64(n)), nc)
	}
	var bc *tunnel.BatchConn
	if tc, ok := nc.(*tls.Conn); ok {
		bc, _ = tc.NetConn().(*tunnel.BatchConn)
	}
	return tunnel.RawConn(nc, rd, bc), nil
}

// enter counts a goroutine of the link, unless it is closed.
func (l *Link) enter() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.wg.Add(1)
	return true
}

// serveLink accepts one node's link session.
func (l *Link) serveLink(w http.ResponseWriter, r *http.Request) {
	if !l.enter() {
		http.Error(w, "link closed", http.StatusServiceUnavailable)
		return
	}
	defer l.wg.Done()
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		http.Error(w, "client certificate required", http.StatusUnauthorized)
		return
	}
	cert := r.TLS.PeerCertificates[0]
	// The sealed transport when the dialing node offers it, else the raw
	// transport or a WebSocket for a node of an older release (a rolling
	// upgrade).
	var conn tunnel.Conn
	transport := tunnel.TransportWebSocket
	var err error
	switch {
	case l.cfg.WebSocketOnly:
		var c *websocket.Conn
		if c, err = websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled}); err == nil {
			conn = tunnel.WebSocketConn(c)
		}
	case !l.cfg.NoSealed && tunnel.Offers(r, tunnel.SealedUpgrade):
		// Its keys come from this mTLS connection (TLS 1.3, whose
		// exporter never fails), which keeps authenticating the peer:
		// the checks above and the handshake's below are unchanged. The
		// dialer speaks first (its Handshake), as the sealed acceptor
		// needs: it writes nothing before it has read a record.
		conn, transport, err = tunnel.AcceptTransport(w, r)
	case tunnel.OffersRaw(r):
		conn, err = acceptRaw(w)
		transport = tunnel.RawUpgrade
	default:
		conn, transport, err = tunnel.AcceptTransport(w, r)
	}
	if err != nil {
		l.log.Info("link upgrade failed", "remote", r.RemoteAddr, "error", err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), l.cfg.Tunnel.HandshakeTimeout)
	hs, err := tunnel.ServerHandshake(ctx, conn, func(_ context.Context, name, _ string) error {
		name = strings.ToLower(name)
		if cert.VerifyHostname(name) != nil {
			return &tunnel.RefusedError{Reason: "the node name is not the certificate's"}
		}
		if _, ok := l.cfg.Peers.Peer(name); !ok {
			return &tunnel.RefusedError{Reason: ReasonNotMember}
		}
		return nil
	})
	cancel()
	if err != nil {
		_ = conn.Close()
		l.log.Info("link handshake refused", "remote", r.RemoteAddr, "peer", hs.Name, "error", err)
		return
	}
	peer := strings.ToLower(hs.Name)
	s, err := tunnel.NewSession(conn, l.cfg.Tunnel)
	if err != nil {
		_ = conn.Close()
		return
	}
	// Early data (Relay.OpenEarly) only to a node that takes it.
	s.SetPeerVersion(hs.Version)
	l.adopt(peer, s, transport != tunnel.TransportWebSocket)
	l.log.Info("link session accepted", "peer", peer, "transport", transport)
	l.serveStreams(peer, s)
}

// adopt makes s the session toward peer unless a live one exists (two
// nodes that dial each other at once keep both sessions, each serving
// the streams its dialer opens), and closes it when the link closes.
func (l *Link) adopt(peer string, s *tunnel.Session, early bool) {
	l.mu.Lock()
	if early {
		l.early[s] = true
	}
	if old := l.sessions[peer]; old == nil || old.Err() != nil {
		l.sessions[peer] = s
	}
	closed := l.closed
	l.mu.Unlock()
	if closed {
		_ = s.CloseWithReason("link closed")
	}
}

// session returns the live session toward peer, dialing one if needed;
// concurrent callers share one dial.
func (l *Link) session(ctx context.Context, peer string) (*tunnel.Session, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	if s := l.sessions[peer]; s != nil && s.Err() == nil {
		l.mu.Unlock()
		return s, nil
	}
	call := l.dialing[peer]
	if call == nil {
		call = &dialCall{done: make(chan struct{})}
		l.dialing[peer] = call
		l.wg.Add(1)
		go l.dial(peer, call)
	}
	l.mu.Unlock()
	select {
	case <-call.done:
		return call.s, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// dial connects to peer and, once the session is up, serves the streams
// the peer opens on it too, until it ends. The dial is bounded by the
// handshake timeout rather than by any one caller's context, since other
// callers may be waiting for it.
func (l *Link) dial(peer string, call *dialCall) {
	defer l.wg.Done()
	s, early, err := l.connect(peer)
	l.mu.Lock()
	delete(l.dialing, peer)
	if err == nil {
		if l.closed {
			err = ErrClosed
			_ = s.Close()
		} else {
			l.sessions[peer] = s
			if early {
				l.early[s] = true
			}
		}
	}
	call.s, call.err = s, err
	close(call.done)
	l.mu.Unlock()
	if err != nil {
		l.log.Info("link dial failed", "peer", peer, "error", err)
		return
	}
	l.serveStreams(peer, s)
}

// connect dials peer and runs the tunnel handshake; early tells that the
// session is not a WebSocket, so the peer takes early data.
func (l *Link) connect(peer string) (s *tunnel.Session, early bool, err error) {
	addr, ok := l.cfg.Peers.Peer(peer)
	if !ok {
		return nil, false, fmt.Errorf("%w: %s", ErrNoPeer, peer)
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.Tunnel.HandshakeTimeout)
	defer cancel()
	var bc *tunnel.BatchConn
	creds := l.creds.Load()
	tr := &http.Transport{
		// Whatever the URL says, the link goes to the peer's address;
		// the URL's host is the name its certificate must carry.
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Each frame then leaves in one TLS record write.
			bc = tunnel.NewBatchConn(c)
			return bc, nil
		},
		TLSClientConfig: &tls.Config{
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return creds.cert() },
			RootCAs:              creds.ca,
			ServerName:           peer,
			MinVersion:           tls.VersionTLS13,
		},
		ForceAttemptHTTP2: false,
	}
	defer tr.CloseIdleConnections()
	var rt http.RoundTripper = tr
	var offer *rawOffer
	if !l.cfg.WebSocketOnly {
		offer = &rawOffer{base: tr, offerSealed: !l.cfg.NoSealed}
		rt = offer
	}
	var conn tunnel.Conn
	transport := tunnel.TransportWebSocket
	c, _, err := websocket.Dial(ctx, "https://"+peer+Path, &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: rt},
		CompressionMode: websocket.CompressionDisabled,
	})
	switch {
	case offer != nil && offer.up.RWC != nil && offer.up.Sealed != nil && errors.Is(err, errRawUpgraded):
		// From here on the TLS connection's record layer is not used:
		// the sealed records go on the socket under it (bc.Conn, which
		// writes a batch with writev). The mTLS handshake authenticated
		// the peer and keys the records.
		if conn, err = tunnel.SealedConn(bc.Conn, *offer.up.Sealed, true); err != nil {
			_ = offer.up.RWC.Close()
			return nil, false, fmt.Errorf("link to %s: %w", peer, err)
		}
		transport = tunnel.SealedUpgrade
	case offer != nil && offer.up.RWC != nil && errors.Is(err, errRawUpgraded):
		conn, transport = tunnel.RawConn(offer.up.RWC, nil, bc), tunnel.RawUpgrade
	case err != nil:
		return nil, false, fmt.Errorf("dial link to %s at %s: %w", peer, addr, err)
	default:
		conn = tunnel.WebSocketClientConn(c, bc)
	}
	if err := tunnel.ClientHandshake(ctx, conn, l.cfg.Name, handshakeKey); err != nil {
		_ = conn.Close()
		return nil, false, fmt.Errorf("link to %s: %w", peer, err)
	}
	s, err = tunnel.NewSession(conn, l.cfg.Tunnel)
	if err != nil {
		_ = conn.Close()
		return nil, false, err
	}
	// The peer took our ProtocolVersion, so it speaks it: it takes early
	// data (Relay.OpenEarly).
	s.SetPeerVersion(tunnel.ProtocolVersion)
	l.log.Info("link session dialed", "peer", peer, "transport", transport)
	return s, transport != tunnel.TransportWebSocket, nil
}

// errRawUpgraded ends the WebSocket library's dial when the peer chose the
// raw or the sealed transport; connect takes the connection from the
// rawOffer.
var errRawUpgraded = errors.New("upgraded to " + tunnel.RawUpgrade)

// rawOffer adds the raw and sealed transports after websocket in the
// link's upgrade request (tunnel.OfferUpgrades, the sealed one when
// offerSealed; as the agent's client does, see docs/protocol.md): a node of
// this release answers with the sealed transport, a node of the release
// before with the raw one, and a node of an older release picks the
// WebSocket. A sealed binding that differs fails the dial rather than
// falling back, as the agent does: the link is mTLS on both ends, and
// nothing legitimate ends TLS between two nodes. The link's transport makes
// one request per dial, so up needs no lock: connect reads it after the
// dial returned.
type rawOffer struct {
	base        http.RoundTripper
	offerSealed bool
	up          tunnel.Upgraded
}

func (o *rawOffer) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	tunnel.OfferUpgrades(r.Header, o.offerSealed)
	resp, err := o.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	up, ok, err := tunnel.TakeUpgrade(resp, o.offerSealed)
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return resp, nil
	}
	o.up = up
	return nil, errRawUpgraded
}

// serveStreams relays the streams peer opens on s until s ends, then
// forgets s and waits for the relays.
func (l *Link) serveStreams(peer string, s *tunnel.Session) {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer func() {
		l.mu.Lock()
		delete(l.early, s)
		var r *Relay
		if l.sessions[peer] == s {
			delete(l.sessions, peer)
			// Whoever holds the peer's relay must look the gateway up
			// again rather than keep a way that just died.
			r = l.relays[peer]
			delete(l.relays, peer)
		}
		l.mu.Unlock()
		if r != nil {
			r.end(fmt.Errorf("%w: link session to %s ended: %w", ErrClosed, peer, s.Err()))
		}
	}()
	for {
		st, err := s.Accept(l.ctx)
		if err != nil {
			if l.ctx.Err() != nil {
				_ = s.CloseWithReason("link closed")
			}
			return
		}
		wg.Go(func() { l.relayIn(peer, st) })
	}
}

// relayIn opens the real stream for one that peer opened, and relays it.
func (l *Link) relayIn(peer string, st *tunnel.Stream) {
	defer st.Close()
	refuse := func(reason string, err error) {
		l.refused.Add(1)
		_ = st.Ack(false, reason)
		l.log.Info("link stream refused", "peer", peer, "gateway", st.Initiator().Gatename, "reason", reason, "error", err)
	}
	// A session outlives its peer's membership (its lease may run out
	// while the TCP connection stays up): each stream asks again.
	if _, ok := l.cfg.Peers.Peer(peer); !ok {
		refuse(ReasonNotMember, nil)
		return
	}
	m, early, err := decodeMetaEarly(st.Initiator())
	if err != nil {
		refuse(err.Error(), err)
		return
	}
	if l.cfg.Local == nil {
		refuse(ReasonNotHere, nil)
		return
	}
	t, ok := l.cfg.Local.Lookup(m.Gateway)
	if !ok {
		refuse(ReasonNotHere, nil)
		return
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.OpenTimeout)
	local, err := l.openLocal(ctx, t, st, m, early)
	cancel()
	if err != nil {
		// The gateway's own reason travels back to the opener.
		reason := ReasonOffline
		if re, ok := errors.AsType[*tunnel.RefusedError](err); ok && re.Reason != "" {
			reason = re.Reason
		}
		refuse(reason, err)
		return
	}
	defer local.Close()
	if err := st.Ack(true, ""); err != nil {
		return
	}
	l.streamsIn.Add(1)
	relay.Conns(l.ctx, st, local, relay.Counts{
		AToB: func(n int) { l.bytesIn.Add(uint64(n)) },
		BToA: func(n int) { l.bytesOut.Add(uint64(n)) },
	})
}

// openLocal opens the real stream for st on the local tunnel t. Early data
// the opening node sent with st (Relay.OpenEarly) that has arrived already
// goes along with this opening too, when t takes it; what comes later, the
// relay copies after the Ack as any other bytes.
func (l *Link) openLocal(ctx context.Context, t hub.Tunnel, st *tunnel.Stream, m tunnel.Meta, early int) (hub.Stream, error) {
	eo, ok := t.(hub.EarlyOpener)
	if !ok || early == 0 {
		return t.Open(ctx, m)
	}
	buf, err := readEarly(ctx, st, early)
	if err != nil {
		return nil, fmt.Errorf("early data: %w", err)
	}
	local, err := eo.OpenEarly(ctx, m, buf)
	if err == nil {
		l.bytesIn.Add(uint64(early))
	}
	return local, err
}

// readEarly reads the n bytes of early data of st, which is not acked yet.
// They travel right behind its Initiator, so they are buffered already or
// about to be; before the Ack, a Read with nothing buffered does not wait
// but fails with ErrNotAcked, so readEarly yields and polls until they are
// in, bounded by ctx.
func readEarly(ctx context.Context, st *tunnel.Stream, n int) ([]byte, error) {
	buf := make([]byte, n)
	got := 0
	for polls := 0; got < n; {
		k, err := st.Read(buf[got:])
		got += k
		switch {
		case k > 0:
		case !errors.Is(err, tunnel.ErrNotAcked):
			return nil, err
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case polls < 100:
			// The session's reader is at most a frame behind.
			polls++
			runtime.Gosched()
		default:
			time.Sleep(50 * time.Microsecond)
		}
	}
	return buf, nil
}

// takesEarly reports whether s is on the raw or the sealed transport,
// whose peer takes early data.
func (l *Link) takesEarly(s *tunnel.Session) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.early[s]
}

// Stats returns the link's counters.
func (l *Link) Stats() Stats {
	l.mu.Lock()
	n := 0
	for _, s := range l.sessions {
		if s.Err() == nil {
			n++
		}
	}
	l.mu.Unlock()
	return Stats{
		Sessions: n, StreamsOut: l.streamsOut.Load(), StreamsIn: l.streamsIn.Load(),
		Refused: l.refused.Load(), BytesIn: l.bytesIn.Load(), BytesOut: l.bytesOut.Load(),
	}
}

// Relay returns the hub.Tunnel that reaches the gateways of node through
// the link: the same Relay for a node until it is closed.
func (l *Link) Relay(node string) *Relay {
	node = strings.ToLower(node)
	l.mu.Lock()
	defer l.mu.Unlock()
	if r := l.relays[node]; r != nil && r.Err() == nil {
		return r
	}
	r := &Relay{l: l, node: node, done: make(chan struct{})}
	if l.closed {
		r.end(ErrClosed)
	} else {
		l.relays[node] = r
	}
	return r
}

// NodeLeft ends the relay to node and closes the link sessions with it:
// the cluster says it is no longer a live member (its lease ran out or it
// left), so nothing should keep reaching its gateways through it. A later
// Relay(node) returns a new relay, for a node that comes back.
func (l *Link) NodeLeft(node string) {
	node = strings.ToLower(node)
	l.mu.Lock()
	r := l.relays[node]
	delete(l.relays, node)
	s := l.sessions[node]
	l.mu.Unlock()
	if r != nil {
		r.end(fmt.Errorf("%w: %s left the cluster", ErrClosed, node))
	}
	if s != nil {
		_ = s.CloseWithReason(ReasonNotMember)
	}
}

// Close stops accepting, closes every link session (and the streams they
// relay) and every Relay, and waits for the link's goroutines.
func (l *Link) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	sessions := make([]*tunnel.Session, 0, len(l.sessions))
	for _, s := range l.sessions {
		sessions = append(sessions, s)
	}
	relays := l.relays
	l.relays = nil
	l.mu.Unlock()
	l.cancel()
	err := l.srv.Close()
	for _, s := range sessions {
		_ = s.CloseWithReason("link closed")
	}
	for _, r := range relays {
		r.end(ErrClosed)
	}
	l.wg.Wait()
	return err
}

// Relay is a hub.Tunnel to the gateways another node holds.
type Relay struct {
	l    *Link
	node string
	once sync.Once
	done chan struct{}
	mu   sync.Mutex
	err  error
}

var (
	_ hub.Tunnel      = (*Relay)(nil)
	_ hub.EarlyOpener = (*Relay)(nil)
)

// Node is the node the relay reaches.
func (r *Relay) Node() string { return r.node }

// Open opens a stream to the gateway m names through the node's link,
// dialing the link first if needed. A refusal by that node or its gateway
// is a *tunnel.RefusedError with the reason.
func (r *Relay) Open(ctx context.Context, m tunnel.Meta) (hub.Stream, error) {
	return r.OpenEarly(ctx, m, nil)
}

// OpenEarly is Open sending early (the visitor's ClientHello) along with
// the stream's opening, so that the holding node can pass it on with its
// own opening toward the gateway (see relayIn) instead of one round trip
// per leg later.
func (r *Relay) OpenEarly(ctx context.Context, m tunnel.Meta, early []byte) (hub.Stream, error) {
	if err := r.Err(); err != nil {
		return nil, err
	}
	init, err := encodeMeta(m)
	if err != nil {
		return nil, err
	}
	s, err := r.l.session(ctx, r.node)
	if err != nil {
		return nil, err
	}
	if len(early) > 0 && len(early) <= tunnel.MaxEarlyData && r.l.takesEarly(s) {
		// The receiving node waits for exactly these bytes and sends
		// them with its own opening (see openLocal). A node of an older
		// release (on a WebSocket) would refuse the longer Meta; it gets
		// the bytes as plain data.
		if withEarly, err := encodeMetaEarly(m, len(early)); err == nil {
			init = withEarly
		}
	}
	st, err := s.OpenEarly(ctx, init, early)
	if err != nil {
		// A nil *tunnel.Stream must not become a non-nil hub.Stream.
		return nil, err
	}
	r.l.streamsOut.Add(1)
	return st, nil
}

// Done is closed once the relay is closed, the link session to its node
// ends, or the node leaves the cluster (NodeLeft).
func (r *Relay) Done() <-chan struct{} { return r.done }

// Err is nil while the relay is open.
func (r *Relay) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// CloseWithReason closes the relay (not the link, which other relays
// share); streams already open carry on.
func (r *Relay) CloseWithReason(reason string) error {
	r.end(fmt.Errorf("%w: %s", ErrClosed, reason))
	return nil
}

func (r *Relay) end(err error) {
	r.once.Do(func() {
		r.mu.Lock()
		r.err = err
		r.mu.Unlock()
		close(r.done)
	})
}

// Kind is KindRelay.
func (r *Relay) Kind() string { return KindRelay }
