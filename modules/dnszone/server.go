package dnszone

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// ServerOptions tunes the transports. Zero values take the defaults.
type ServerOptions struct {
	// ReadTimeout bounds the wait for the first query on a TCP connection.
	// Default 2s.
	ReadTimeout time.Duration `json:"read_timeout,omitempty"`
	// IdleTimeout bounds the wait for each further query on a TCP
	// connection (RFC 7766 6.2.3 asks for seconds, not minutes: an idle
	// connection holds a slot others may need). Default 5s.
	IdleTimeout time.Duration `json:"idle_timeout,omitempty"`
	// WriteTimeout bounds each write on a TCP connection, so that a client
	// that stops reading (during a zone transfer, say) cannot hold a
	// goroutine forever. Default 10s.
	WriteTimeout time.Duration `json:"write_timeout,omitempty"`
	// MaxTCPConns bounds the open TCP connections per listener. A new
	// connection beyond it closes the least recently active one (RFC 7766
	// 6.2.3 lets a server under pressure close idle connections), so that
	// held connections never leave new clients waiting. Default 1024.
	MaxTCPConns int `json:"max_tcp_conns,omitempty"`
	// MaxTCPConnsPerClient bounds the open TCP connections of one client
	// (an IPv4 address, an IPv6 /64) per listener; a new one beyond it
	// closes that client's least recently active connection, so one
	// address can neither fill the listener nor lock itself out.
	// Default 16.
	MaxTCPConnsPerClient int `json:"max_tcp_conns_per_client,omitempty"`
	// MaxTCPQueries bounds the queries served on one TCP connection.
	// Default 128.
	MaxTCPQueries int `json:"max_tcp_queries,omitempty"`
	// UDPSize is the read buffer for one UDP query. Default 4096.
	UDPSize int `json:"udp_size,omitempty"`
	// UDPReaders is how many loops read each UDP socket with batched
	// reads and writes (recvmmsg/sendmmsg, Linux): while one answers its
	// batch, another reads. Default GOMAXPROCS. Negative: serve UDP with
	// miekg/dns's one-datagram-per-syscall reader, as on other systems
	// and on sockets that are not (and do not wrap) a *net.UDPConn.
	UDPReaders int `json:"udp_readers,omitempty"`
}

func (o ServerOptions) withDefaults() ServerOptions {
	setDuration(&o.ReadTimeout, 2*time.Second)
	setDuration(&o.IdleTimeout, 5*time.Second)
	setDuration(&o.WriteTimeout, 10*time.Second)
	if o.MaxTCPConns <= 0 {
		o.MaxTCPConns = 1024
	}
	if o.MaxTCPConnsPerClient <= 0 {
		o.MaxTCPConnsPerClient = 16
	}
	o.MaxTCPConnsPerClient = min(o.MaxTCPConnsPerClient, o.MaxTCPConns)
	if o.MaxTCPQueries == 0 {
		o.MaxTCPQueries = 128
	}
	if o.UDPSize < dns.MinMsgSize {
		o.UDPSize = 4096
	}
	if o.UDPReaders == 0 {
		o.UDPReaders = runtime.GOMAXPROCS(0)
	}
	return o
}

// Errors of Server.Start.
var (
	ErrServerStarted = errors.New("dns server already started")
	ErrNoListeners   = errors.New("dns server has no listener")
	ErrServerClosed  = errors.New("dns server shut down")
)

// Server serves a Handler on sockets opened by someone else (the Caddy
// adapter, or tests). It owns them from Start on and closes them at
// Shutdown.
type Server struct {
	h    *Handler
	srvs []*dns.Server
	pcs  []net.PacketConn
	lns  []*tcpListener
	// loops serve the UDP sockets that take batched I/O, readers
	// goroutines each.
	loops   []*udpLoop
	readers int

	mu       sync.Mutex
	started  bool
	stopping atomic.Bool
	wg       sync.WaitGroup
	errc     chan error
}

// NewServer returns a server of h on the given UDP sockets and TCP
// listeners.
func NewServer(h *Handler, pcs []net.PacketConn, lns []net.Listener, opts ServerOptions) *Server {
	o := opts.withDefaults()
	s := &Server{h: h, errc: make(chan error, len(pcs)+len(lns)), readers: o.UDPReaders}
	newDNSServer := func() *dns.Server {
		return &dns.Server{
			Handler:       h,
			ReadTimeout:   o.ReadTimeout,
			IdleTimeout:   func() time.Duration { return o.IdleTimeout },
			MaxTCPQueries: o.MaxTCPQueries,
			UDPSize:       o.UDPSize,
			MsgAcceptFunc: acceptQuery,
			MsgInvalidFunc: func([]byte, error) {
				h.stats.malformed.Add(1)
			},
		}
	}
	for _, pc := range pcs {
		s.pcs = append(s.pcs, pc)
		if o.UDPReaders > 0 {
			// A socket the batched loop cannot take (or whose packet
			// info cannot be enabled) is served by miekg/dns instead.
			if l, err := newUDPLoop(h, pc, o.UDPSize); err == nil && l != nil {
				s.loops = append(s.loops, l)
				continue
			}
		}
		srv := newDNSServer()
		srv.PacketConn = pc
		s.srvs = append(s.srvs, srv)
	}
	for _, ln := range lns {
		tl := &tcpListener{
			Listener:     ln,
			writeTimeout: o.WriteTimeout,
			maxConns:     o.MaxTCPConns,
			maxPerClient: o.MaxTCPConnsPerClient,
			done:         make(chan struct{}),
			conns:        map[*tcpConn]struct{}{},
			perClient:    map[netip.Prefix][]*tcpConn{},
			epoch:        time.Now(),
		}
		srv := newDNSServer()
		srv.Listener = tl
		s.lns = append(s.lns, tl)
		s.srvs = append(s.srvs, srv)
	}
	return s
}

// BatchedUDP returns how many of the UDP sockets are served by the batched
// loop; the others are served by miekg/dns's reader.
func (s *Server) BatchedUDP() int { return len(s.loops) }

// acceptQuery lets every request reach the handler, which answers opcodes,
// section counts and EDNS itself (so that the rules are unit-testable in
// Answer), and ignores responses: answering one could loop between two
// servers or reflect traffic.
func acceptQuery(dh dns.Header) dns.MsgAcceptAction {
	if dh.Bits&(1<<15) != 0 {
		return dns.MsgIgnore
	}
	return dns.MsgAccept
}

// Start serves every socket in its own goroutine, owned by the Server
// until Shutdown, and returns once all of them are listening.
func (s *Server) Start() error {
	s.mu.Lock()
	switch {
	case s.stopping.Load():
		s.mu.Unlock()
		return ErrServerClosed
	case s.started:
		s.mu.Unlock()
		return ErrServerStarted
	case len(s.srvs) == 0 && len(s.loops) == 0:
		s.mu.Unlock()
		return ErrNoListeners
	}
	// The lock is held until every goroutine is counted, so that a
	// concurrent Shutdown waits for all of them.
	s.started = true
	for _, l := range s.loops {
		var once sync.Once
		for range s.readers {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				if err := l.run(s.stopping.Load); err != nil && !s.stopping.Load() {
					// One report per socket, whichever reader saw it.
					once.Do(func() {
						s.errc <- fmt.Errorf("dns server on udp/%s: %w", l.conn.LocalAddr(), err)
					})
				}
			}()
		}
	}
	for _, srv := range s.srvs {
		ready := make(chan struct{})
		exited := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(ready) }
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer close(exited)
			if err := srv.ActivateAndServe(); err != nil && !s.stopping.Load() {
				s.errc <- fmt.Errorf("dns server on %s: %w", serverAddr(srv), err)
			}
		}()
		select {
		case <-ready:
		case <-exited:
		}
	}
	s.mu.Unlock()
	select {
	case err := <-s.errc:
		_ = s.Shutdown(context.Background())
		return err
	default:
		return nil
	}
}

// Serve starts the server, runs until ctx ends or a socket fails, then
// shuts down, giving TCP connections shutdownGrace to finish. It returns
// nil when ctx ended, the failure otherwise.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Start(); err != nil {
		return err
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-s.errc:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if serr := s.Shutdown(sctx); err == nil && !errors.Is(serr, context.DeadlineExceeded) {
		err = serr
	}
	return err
}

// shutdownGrace is how long Serve lets TCP connections finish.
const shutdownGrace = 5 * time.Second

// Errors returns failures of sockets after Start (a socket closed under the
// server); the server keeps serving its other sockets.
func (s *Server) Errors() <-chan error { return s.errc }

// Shutdown stops reading, lets the queries in flight finish until ctx
// ends, then closes what remains, and returns when every goroutine of the
// server has exited. It returns ctx's error when it had to cut connections.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.stopping.Swap(true) {
		return nil
	}
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	// Closing the sockets first ends the read loops at once. A socket
	// shared with the next configuration (Caddy's reload-safe sockets)
	// survives this: miekg/dns sets the read deadline before every read,
	// so the deadline the shutdown moves costs the other reader one
	// spurious timeout (TestServerSharedSocketReload).
	for _, pc := range s.pcs {
		_ = pc.Close()
	}
	for _, ln := range s.lns {
		_ = ln.Close()
	}
	var err error
	if started {
		var wg sync.WaitGroup
		errs := make([]error, len(s.srvs))
		for i, srv := range s.srvs {
			wg.Go(func() { errs[i] = srv.ShutdownContext(ctx) })
		}
		wg.Wait()
		for _, e := range errs {
			// A server whose socket failed earlier says it is not
			// started: nothing to report.
			if errors.Is(e, context.Canceled) || errors.Is(e, context.DeadlineExceeded) {
				err = e
			}
		}
	}
	for _, ln := range s.lns {
		ln.closeConns()
	}
	s.wg.Wait()
	return err
}

func serverAddr(srv *dns.Server) string {
	if srv.PacketConn != nil {
		return "udp/" + srv.PacketConn.LocalAddr().String()
	}
	return "tcp/" + srv.Listener.Addr().String()
}

// tcpListener bounds the open connections, in all and per client, by
// closing the least recently active one when a new one would exceed a
// bound; puts a deadline on every write (miekg/dns sets none); backs off on
// accept errors such as running out of file descriptors (miekg/dns retries
// at once); and keeps the connections so that Shutdown can close those that
// outlive its context.
type tcpListener struct {
	net.Listener
	writeTimeout time.Duration
	maxConns     int
	maxPerClient int
	done         chan struct{}
	closeOnce    sync.Once
	// epoch is the origin of the connections' activity clocks.
	epoch time.Time

	mu        sync.Mutex
	conns     map[*tcpConn]struct{}
	perClient map[netip.Prefix][]*tcpConn
}

func (l *tcpListener) Accept() (net.Conn, error) {
	for delay := 5 * time.Millisecond; ; delay = min(2*delay, time.Second) {
		c, err := l.Listener.Accept()
		if err == nil {
			return l.admit(c), nil
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() && !isTemporary(err) {
			return nil, err
		}
		select {
		case <-time.After(delay):
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
}

// admit registers c, first closing the least recently active connection of
// its client when the client is at its bound, or of the listener when the
// listener is. Closing rather than refusing the new one means a flood of
// idle connections costs its sender its own older connections, and a
// client that really queries is never locked out.
func (l *tcpListener) admit(c net.Conn) *tcpConn {
	tc := &tcpConn{Conn: c, l: l, client: clientPrefix(c.RemoteAddr())}
	tc.touch()
	var victims []*tcpConn
	l.mu.Lock()
	if mine := l.perClient[tc.client]; len(mine) >= l.maxPerClient {
		victims = append(victims, l.unlinkLocked(leastActive(mine)))
	}
	if len(l.conns) >= l.maxConns {
		victims = append(victims, l.unlinkLocked(leastActive(keys(l.conns))))
	}
	l.conns[tc] = struct{}{}
	l.perClient[tc.client] = append(l.perClient[tc.client], tc)
	l.mu.Unlock()
	for _, v := range victims {
		_ = v.Close()
	}
	return tc
}

// unlinkLocked removes c from the listener's sets and returns it; its
// Close then finds nothing to remove.
func (l *tcpListener) unlinkLocked(c *tcpConn) *tcpConn {
	if _, ok := l.conns[c]; !ok {
		return c
	}
	delete(l.conns, c)
	mine := l.perClient[c.client]
	if i := slices.Index(mine, c); i >= 0 {
		mine = slices.Delete(mine, i, i+1)
	}
	if len(mine) == 0 {
		delete(l.perClient, c.client)
	} else {
		l.perClient[c.client] = mine
	}
	return c
}

func keys(m map[*tcpConn]struct{}) []*tcpConn {
	out := make([]*tcpConn, 0, len(m))
	for c := range m {
		out = append(out, c)
	}
	return out
}

func leastActive(cs []*tcpConn) *tcpConn {
	return slices.MinFunc(cs, func(a, b *tcpConn) int {
		return cmp.Compare(a.active.Load(), b.active.Load())
	})
}

// clientPrefix is the unit the per-client bound counts: an IPv4 address,
// or an IPv6 /64, which one subscriber usually holds whole.
func clientPrefix(a net.Addr) netip.Prefix {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}
	}
	ip := ta.AddrPort().Addr().Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// isTemporary reports accept errors worth retrying (EMFILE, ECONNABORTED);
// net.Error.Temporary is deprecated but still the only portable test.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (l *tcpListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

func (l *tcpListener) closeConns() {
	l.mu.Lock()
	conns := keys(l.conns)
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

type tcpConn struct {
	net.Conn
	l      *tcpListener
	client netip.Prefix
	// active is when the connection last read or wrote, in nanoseconds
	// since the listener's epoch: the least recently active connection is
	// the one closed under pressure.
	active    atomic.Int64
	closeOnce sync.Once
}

func (c *tcpConn) touch() { c.active.Store(int64(time.Since(c.l.epoch))) }

func (c *tcpConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.touch()
	}
	return n, err
}

func (c *tcpConn) Write(b []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.l.writeTimeout)); err != nil {
		return 0, err
	}
	c.touch()
	return c.Conn.Write(b)
}

func (c *tcpConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.l.mu.Lock()
		c.l.unlinkLocked(c)
		c.l.mu.Unlock()
	})
	return err
}
