package pagekite

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// maxControl bounds the control chunks waiting for the writer. Only a kite
// that stopped reading its tunnel fills it, and then the tunnel is dead.
const maxControl = 4096

// session is one kite connection after its request head: the chunked
// tunnel carrying one or more kites (domains) and their streams.
//
// Two goroutines own it: the reader (ServeConn's own goroutine, in run)
// and the writer (started by run, stopped by close). Everything else
// talks to the writer through ctrl (small control chunks, written first)
// and dataCh (stream data, handed over synchronously so that a stream's
// chunks and its EOF keep their order).
type session struct {
	srv      *Server
	conn     net.Conn
	br       *bufio.Reader
	log      *zap.Logger
	addKites bool
	started  time.Time

	mu       sync.Mutex
	kites    map[string]*kite
	streams  map[int]*stream
	nextSID  int
	ctrl     [][]byte
	progress map[int]*stream // streams whose SKB is due, coalesced
	pong     string          // latest PING payload to answer
	havePong bool
	pinged   bool // a PING of ours is unanswered

	ctrlCh   chan struct{}
	dataCh   chan dataReq
	done     chan struct{}
	err      error
	closed   sync.Once
	lastRead atomic.Int64 // unix nanos of the last chunk from the kite
}

type dataReq struct {
	frame []byte
	res   chan error
}

func newSession(srv *Server, conn net.Conn, br *bufio.Reader, addKites bool) *session {
	return &session{
		srv: srv, conn: conn, br: br, addKites: addKites, started: time.Now(),
		log:      srv.log.With(zap.Stringer("kite_addr", conn.RemoteAddr())),
		kites:    make(map[string]*kite),
		streams:  make(map[int]*stream),
		progress: make(map[int]*stream),
		ctrlCh:   make(chan struct{}, 1),
		dataCh:   make(chan dataReq),
		done:     make(chan struct{}),
	}
}

type authResult struct {
	fields            []Field
	ok, signThis, bad int
}

// authorize checks each kite request and registers the accepted kites.
func (s *session) authorize(ctx context.Context, reqs []KiteRequest) authResult {
	var res authResult
	srv := s.srv
	for _, r := range reqs {
		id := r.ID()
		proto, domain := strings.ToLower(r.Proto), strings.ToLower(r.Domain)
		invalid := func(why string, err error) {
			res.bad++
			srv.stats.KitesRefused.Add(1)
			res.fields = append(res.fields, Field{"X-PageKite-Invalid", id}, Field{"X-PageKite-Invalid-Why", id + ";" + why})
			s.log.Info("kite refused", zap.String("domain", domain), zap.String("reason", why), zap.Error(err))
		}
		if proto != "https" {
			// TLS ends on the gateway and the cloud routes by SNI: only
			// https kites make sense here.
			invalid("protocol", nil)
			continue
		}
		if r.FEToken == "" || !srv.chal.valid(id, r.FEToken) {
			// No challenge yet, or an expired one: (re)issue, as the
			// original does for a kite that has not signed one.
			res.signThis++
			res.fields = append(res.fields, Field{"X-PageKite-SignThis", id + ":" + srv.chal.issue(id)})
			continue
		}
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		secret, err := srv.Authenticate(actx, domain, proto)
		cancel()
		switch {
		case errors.Is(err, ErrUnknownKite):
			invalid("unauthorized", err)
			continue
		case err != nil:
			invalid("error", err)
			continue
		case !checkKiteSign(secret, r.Payload(), r.Sign):
			invalid("signature", nil)
			continue
		case !srv.chal.consume(r.FEToken):
			invalid("replay", nil)
			continue
		}
		if err := s.addKite(domain, proto); err != nil {
			res.bad++
			srv.stats.KitesRefused.Add(1)
			res.fields = append(res.fields, Field{"X-PageKite-Duplicate", id})
			s.log.Info("kite duplicate", zap.String("domain", domain), zap.Error(err))
			continue
		}
		res.ok++
		srv.stats.KitesAccepted.Add(1)
		res.fields = append(res.fields, Field{"X-PageKite-OK", id})
		s.log.Info("kite accepted", zap.String("domain", domain))
	}
	return res
}

// addKite registers a kite for domain with the hub through Register.
func (s *session) addKite(domain, proto string) error {
	k := &kite{s: s, domain: domain, proto: proto, done: make(chan struct{})}
	s.mu.Lock()
	if _, dup := s.kites[domain]; dup {
		s.mu.Unlock()
		return errors.New("domain already on this connection")
	}
	select {
	case <-s.done:
		s.mu.Unlock()
		return s.err
	default:
	}
	s.kites[domain] = k
	s.mu.Unlock()
	if err := s.srv.Register(domain, k); err != nil {
		s.mu.Lock()
		delete(s.kites, domain)
		s.mu.Unlock()
		return err
	}
	return nil
}

// run serves the tunnel until it ends.
func (s *session) run(ctx context.Context) error {
	s.lastRead.Store(time.Now().UnixNano())
	stop := context.AfterFunc(ctx, func() { s.close(context.Cause(ctx)) })
	defer stop()
	var wg sync.WaitGroup
	wg.Go(s.writeLoop)
	err := s.readLoop(ctx)
	s.close(err)
	wg.Wait()
	return s.err
}

func (s *session) readLoop(ctx context.Context) error {
	lim := s.srv.limits
	buf := make([]byte, 0, 64<<10)
	for {
		_ = s.conn.SetReadDeadline(time.Now().Add(lim.PingInterval + lim.PingTimeout))
		n, err := ReadChunkSize(s.br, lim.MaxChunk)
		if err == nil {
			buf = buf[:0]
			buf = append(buf, make([]byte, n)...)
			_, err = io.ReadFull(s.br, buf)
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return ErrKiteDead
			}
			if errors.Is(err, io.EOF) {
				return ErrTunnelClosed
			}
			return err
		}
		s.lastRead.Store(time.Now().UnixNano())
		ch, err := ParseChunk(buf)
		if err != nil {
			return err
		}
		if err := s.handle(ctx, ch); err != nil {
			return err
		}
	}
}

// handle acts on one chunk from the kite.
func (s *session) handle(ctx context.Context, ch Chunk) error {
	h := ch.Header
	if h.Has("NOOP") {
		return s.handleNoop(ctx, h)
	}
	sidv := h.Get("SID")
	sid, err := strconv.Atoi(sidv)
	if err != nil || sid <= 0 {
		return fmt.Errorf("%w: data chunk with SID %.20q", ErrBadChunk, sidv)
	}
	s.mu.Lock()
	st := s.streams[sid]
	s.mu.Unlock()
	if st == nil {
		return nil // a stream we closed; its late chunks are dropped
	}
	if h.Has("EOF") {
		// An EOF chunk's data ("Bye!") is filler, never stream data.
		st.kiteEOF(h.Get("EOF"))
		return nil
	}
	if len(ch.Data) > 0 && !st.deliver(ch.Data, s.srv.limits.StreamBuffer) {
		s.srv.stats.StreamOverruns.Add(1)
		s.log.Warn("kite overran a stream's buffer; resetting it", zap.Int("sid", sid))
		s.forget(st)
		return s.queueEOF(sid, "1WR")
	}
	return nil
}

func (s *session) handleNoop(ctx context.Context, h Header) error {
	if ping := h.Get("PING"); ping != "" || h.Has("PING") {
		s.srv.stats.PingsFromKite.Add(1)
		if len(ping) > 64 {
			ping = ping[:64]
		}
		s.mu.Lock()
		s.pong, s.havePong = ping, true
		s.mu.Unlock()
		s.signal()
	}
	if h.Has("PONG") {
		s.srv.stats.PongsFromKite.Add(1)
		s.mu.Lock()
		s.pinged = false
		s.mu.Unlock()
	}
	if skbv := h.Get("SKB"); skbv != "" {
		sid, err1 := strconv.Atoi(h.Get("SID"))
		skb, err2 := strconv.ParseInt(skbv, 10, 64)
		if err1 != nil || err2 != nil || skb < 0 {
			return fmt.Errorf("%w: SKB %.20q for SID %.20q", ErrBadChunk, skbv, h.Get("SID"))
		}
		s.mu.Lock()
		st := s.streams[sid]
		s.mu.Unlock()
		if st != nil {
			st.progress(skb)
		}
	}
	if h.Has("X-PageKite") || h.Has("X-Beanstalk") {
		// AddKites: the kite re-signs inside the tunnel.
		reqs, err := kiteRequests(h, s.srv.limits.MaxKites)
		if err != nil {
			return err
		}
		res := s.authorize(ctx, reqs)
		fields := append([]Field{{"NOOP", "1"}}, res.fields...)
		if err := s.queue(AppendChunk(nil, fields, []byte("!"))); err != nil {
			return err
		}
	}
	return nil
}

// signal wakes the writer.
func (s *session) signal() {
	select {
	case s.ctrlCh <- struct{}{}:
	default:
	}
}

// queue adds a control chunk for the writer.
func (s *session) queue(frame []byte) error {
	s.mu.Lock()
	if len(s.ctrl) >= maxControl {
		s.mu.Unlock()
		err := errors.New("pagekite: kite is not reading its tunnel")
		s.close(err)
		return err
	}
	s.ctrl = append(s.ctrl, frame)
	s.mu.Unlock()
	s.signal()
	return nil
}

func (s *session) queueEOF(sid int, how string) error {
	return s.queue(AppendChunk(nil, []Field{{"SID", strconv.Itoa(sid)}, {"EOF", how}}, []byte("Bye!")))
}

// queueProgress asks the writer to report st's consumption as SKB.
func (s *session) queueProgress(st *stream) {
	s.mu.Lock()
	s.progress[st.sid] = st
	s.mu.Unlock()
	s.signal()
}

// sendData hands one data chunk to the writer and waits until it is
// written, so that a later EOF cannot overtake it.
func (s *session) sendData(frame []byte, dl <-chan struct{}) error {
	req := dataReq{frame: frame, res: make(chan error, 1)}
	select {
	case s.dataCh <- req:
	case <-s.done:
		return fmt.Errorf("%w: %w", ErrStreamReset, s.err)
	case <-dl:
		return errDeadline
	}
	select {
	case err := <-req.res:
		return err
	case <-s.done:
		return fmt.Errorf("%w: %w", ErrStreamReset, s.err)
	}
}

// takeControl collects the control chunks due, in one buffer.
func (s *session) takeControl() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []byte
	for _, f := range s.ctrl {
		out = append(out, f...)
	}
	s.ctrl = s.ctrl[:0]
	if s.havePong {
		out = AppendChunk(out, []Field{{"NOOP", "1"}, {"PONG", s.pong}}, []byte("!"))
		s.havePong = false
	}
	for sid, st := range s.progress {
		st.mu.Lock()
		kb := st.reported
		st.mu.Unlock()
		out = AppendChunk(out, []Field{{"NOOP", "1"}, {"SID", strconv.Itoa(sid)}, {"SKB", strconv.FormatInt(kb, 10)}}, nil)
		delete(s.progress, sid)
	}
	return out
}

func (s *session) write(b []byte) error {
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.srv.limits.WriteTimeout))
	_, err := s.conn.Write(b)
	return err
}

func (s *session) writeLoop() {
	lim := s.srv.limits
	tick := time.NewTicker(min(lim.PingInterval, lim.AddKitesTimeout) / 4)
	defer tick.Stop()
	for {
		if c := s.takeControl(); len(c) > 0 {
			if err := s.write(c); err != nil {
				s.close(err)
				return
			}
			continue
		}
		select {
		case <-s.done:
			return
		case <-s.ctrlCh:
		case req := <-s.dataCh:
			// Control chunks queued before this data (a stream's open)
			// go first.
			out := append(s.takeControl(), req.frame...)
			err := s.write(out)
			req.res <- err
			if err != nil {
				s.close(err)
				return
			}
		case now := <-tick.C:
			s.housekeep(now)
		}
	}
}

// housekeep pings a quiet kite and ends a connection that never got a
// live kite.
func (s *session) housekeep(now time.Time) {
	lim := s.srv.limits
	s.mu.Lock()
	live := len(s.kites)
	ping := !s.pinged && now.Sub(time.Unix(0, s.lastRead.Load())) >= lim.PingInterval
	if ping {
		s.pinged = true
	}
	s.mu.Unlock()
	if live == 0 && now.Sub(s.started) >= lim.AddKitesTimeout {
		s.close(ErrKiteTimeout)
		return
	}
	if ping {
		ts := strconv.FormatFloat(float64(now.UnixNano())/1e9, 'f', 4, 64)
		_ = s.queue(AppendChunk(nil, []Field{{"NOOP", "1"}, {"PING", ts}}, []byte("!")))
	}
}

// forget removes st from the stream table.
func (s *session) forget(st *stream) {
	s.mu.Lock()
	if s.streams[st.sid] == st {
		delete(s.streams, st.sid)
	}
	delete(s.progress, st.sid)
	s.mu.Unlock()
}

// close ends the session: the connection, every kite and every stream.
func (s *session) close(err error) {
	s.closed.Do(func() {
		if err == nil {
			err = ErrTunnelClosed
		}
		s.mu.Lock()
		s.err = err
		close(s.done)
		kites, streams := s.kites, s.streams
		s.kites, s.streams = map[string]*kite{}, map[int]*stream{}
		s.mu.Unlock()
		_ = s.conn.Close()
		for _, st := range streams {
			st.reset(fmt.Errorf("%w: %w", ErrStreamReset, err))
		}
		for _, k := range kites {
			k.end(err)
		}
		s.log.Info("kite connection ended", zap.Error(err))
	})
}

// open starts a stream to kite k.
func (s *session) open(k *kite, m tunnel.Meta) (*stream, error) {
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		return nil, s.err
	default:
	}
	if len(s.streams) >= s.srv.limits.MaxStreams {
		s.mu.Unlock()
		return nil, errors.New("pagekite: too many streams on this kite")
	}
	s.nextSID++
	sid := s.nextSID
	var peer net.Addr = s.conn.RemoteAddr()
	if m.Client.IsValid() {
		peer = net.TCPAddrFromAddrPort(m.Client)
	}
	st := newStream(s, k, sid, s.conn.LocalAddr(), peer)
	s.streams[sid] = st
	s.mu.Unlock()

	host := m.ServerName
	if host == "" {
		host = k.domain
	}
	hdr := []Field{{"SID", strconv.Itoa(sid)}, {"Proto", k.proto}, {"Port", strconv.Itoa(s.srv.Port)}, {"Host", host}}
	if m.Client.IsValid() {
		hdr = append(hdr, Field{"RIP", m.Client.Addr().Unmap().String()}, Field{"RPort", strconv.Itoa(int(m.Client.Port()))})
	}
	// The open chunk carries no data (the caller writes the ClientHello
	// next); the SKB 0 after it switches on the kite's flow control for
	// this stream, which the kite applies only after a first report.
	frame := AppendChunk(nil, hdr, nil)
	frame = AppendChunk(frame, []Field{{"NOOP", "1"}, {"SID", strconv.Itoa(sid)}, {"SKB", "0"}}, nil)
	if err := s.queue(frame); err != nil {
		return nil, err
	}
	s.srv.stats.StreamsOpened.Add(1)
	return st, nil
}

// kite is one accepted domain of a session: the hub.Tunnel the hub sees.
type kite struct {
	s             *session
	domain, proto string
	done          chan struct{}
	once          sync.Once
	mu            sync.Mutex
	err           error
}

var _ hub.Tunnel = (*kite)(nil)

func (k *kite) Open(ctx context.Context, m tunnel.Meta) (hub.Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := k.Err(); err != nil {
		return nil, err
	}
	st, err := k.s.open(k, m)
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (k *kite) Done() <-chan struct{} { return k.done }

func (k *kite) Err() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.err
}

// KindPageKite is the Kind of a kite's tunnel.
const KindPageKite = "pagekite"

func (k *kite) Kind() string { return KindPageKite }

// Remote is the address the kite connected from, as this frontend's socket
// saw it (invalid when it is not an IP address): what the cloud records
// as the gateway's public address.
func (k *kite) Remote() netip.AddrPort {
	var ap netip.AddrPort
	if ta, ok := k.s.conn.RemoteAddr().(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	} else if a := k.s.conn.RemoteAddr(); a != nil {
		ap, _ = netip.ParseAddrPort(a.String())
	}
	if !ap.IsValid() {
		return ap
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// CloseWithReason ends this kite and its streams. PageKite has no message
// that carries a reason to a live kite, so the reason only goes to our
// log; when it was the connection's last kite, the connection closes, and
// the kite reconnects as it would after any drop.
func (k *kite) CloseWithReason(reason string) error {
	err := fmt.Errorf("%w: %s", ErrKiteClosed, reason)
	s := k.s
	s.mu.Lock()
	if s.kites[k.domain] == k {
		delete(s.kites, k.domain)
	}
	var mine []*stream
	for sid, st := range s.streams {
		if st.k == k {
			mine = append(mine, st)
			delete(s.streams, sid)
		}
	}
	last := len(s.kites) == 0
	s.mu.Unlock()
	for _, st := range mine {
		st.reset(fmt.Errorf("%w: %w", ErrStreamReset, err))
		_ = s.queueEOF(st.sid, "1WR")
	}
	k.end(err)
	if last {
		s.close(err)
	}
	return nil
}

func (k *kite) end(err error) {
	k.once.Do(func() {
		k.mu.Lock()
		k.err = err
		k.mu.Unlock()
		close(k.done)
	})
}
