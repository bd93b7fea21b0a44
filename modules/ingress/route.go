package ingress

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-project/gatehouse/modules/clienthello"
	"github.com/gatehouse-project/gatehouse/modules/pagekite"
	"github.com/gatehouse-project/gatehouse/modules/relay"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// handle routes one connection: down its gateway's tunnel, to the local
// server through toServer, or closed. It returns when the connection is
// handed over or done with (after its relay, for a tunneled one).
func (r *Router) handle(c net.Conn, toServer func(net.Conn) bool) {
	var first []byte
	timeout := r.cfg.PeekTimeout
	if timeout <= 0 {
		timeout = clienthello.DefaultTimeout
	}
	if r.cfg.Kites != nil {
		start := time.Now()
		var kite bool
		var err error
		first, kite, err = sniffKite(c, timeout, r.sniffBuffer())
		if kite {
			r.serveKite(c, first)
			return
		}
		if len(first) == 0 {
			r.cfg.Metrics.Refused(peekFailure(err))
			r.cfg.Metrics.Routed(RouteClosed)
			_ = c.Close()
			return
		}
		// One budget for the whole peek: the sniff's time is taken from
		// the ClientHello's. What was read is judged as before (plain
		// text after a partial kite prefix goes to the server, a
		// truncated ClientHello is a timeout), so Peek gets at least a
		// moment to say so.
		timeout = max(timeout-time.Since(start), time.Millisecond)
	}
	info, rc, err := clienthello.PeekAfter(c, first, r.cfg.MaxHelloBytes, timeout)
	if err != nil {
		switch reason := peekFailure(err); reason {
		case ReasonNotTLS, ReasonMalformed:
			// A malformed ClientHello is one our parser rejects, and so does
			// crypto/tls (several host names, a trailing dot, bad
			// lengths): the local server refuses it without using any
			// certificate.
			r.toServer(rc, reason, toServer)
		case ReasonTooLarge:
			// Its server name lies past the bytes read, so it may well
			// name a live gateway: it is never handed to the server,
			// whose certificate would then answer for that gateway.
			r.refuseTLS(rc, reason, alertInternalError, "", zap.Error(err))
		default:
			r.cfg.Metrics.Refused(reason)
			r.cfg.Metrics.Routed(RouteClosed)
			_ = rc.Close()
		}
		return
	}
	sni := info.ServerName
	if sni == "" {
		// Browsers send no server name only for an address (https://IP/),
		// which no site of the cloud answers unless the operator chose a
		// default certificate.
		if r.cfg.NoSNIToServer {
			r.toServer(rc, "", toServer)
		} else {
			r.refuseTLS(rc, ReasonNoSNI, alertUnrecognizedName, "")
		}
		return
	}
	name, ok := r.cfg.Gateway(sni)
	if !ok && r.cfg.Domain != nil {
		// A gateway's custom domain: passed through like NAME.ZONE, TLS
		// ends on the gateway, which holds the domain's certificate.
		// Offline, it gets an alert (see offline): no certificate of the
		// cloud covers it.
		name, ok = r.cfg.Domain(sni)
	}
	if !ok {
		// The cloud's own sites, or names outside the zone.
		r.toServer(rc, "", toServer)
		return
	}
	t, ok := r.cfg.Tunnels.Lookup(name)
	if !ok {
		r.offline(rc, sni, name, toServer)
		return
	}
	client := clientAddr(c)
	release, reason := r.limits.acquire(name, client.Addr())
	if reason != "" {
		r.refuseTLS(rc, reason, alertInternalError, name)
		return
	}
	defer release()
	// Not tied to the listener: on a reload the stream is still wanted.
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.OpenTimeout)
	meta := tunnel.Meta{Gateway: name, ServerName: sni, Client: client}
	var st hub.Stream
	if eo, ok := t.(hub.EarlyOpener); ok && rc.Buffered() > 0 && rc.Buffered() <= tunnel.MaxEarlyData {
		// The ClientHello goes with the stream's opening, so the gateway's
		// server has it as soon as the agent accepts.
		// On failure the paths below hand the connection on whole, so
		// the bytes are only dropped from the replay once they are sent.
		// Not copied: nothing reads rc meanwhile, and OpenEarly keeps
		// no reference to them. (A copy, then io.CopyN to io.Discard,
		// took 2 KiB and about 1 µs warm, several in the profile of new
		// connections, on the way to the agent.)
		early := rc.Pending()
		if st, err = eo.OpenEarly(ctx, meta, early); err == nil {
			rc.Discard(len(early))
			r.cfg.Metrics.Relayed(len(early), 0)
		}
	} else {
		st, err = t.Open(ctx, meta)
	}
	cancel()
	if err != nil {
		if t.Err() != nil {
			if _, live := r.cfg.Tunnels.Lookup(name); !live {
				// The tunnel ended meanwhile and none replaced it: the
				// gateway is offline now, nothing live is exposed.
				r.offline(rc, sni, name, toServer)
				return
			}
		}
		// The gateway is online and did not take the stream. Handing the
		// connection to the server would show the visitor's request to
		// the cloud under its *.ZONE certificate: close it instead.
		r.refuseTLS(rc, ReasonOpenFailed, alertInternalError, name, zap.Error(err))
		return
	}
	r.relay(rc, st, name)
}

// sniffBuffer is how much the sniff reads at most: whatever the client
// has sent, up to a typical ClientHello, so that TLS costs no extra read.
func (r *Router) sniffBuffer() int {
	limit := r.cfg.MaxHelloBytes
	if limit <= 0 {
		limit = clienthello.DefaultMaxBytes
	}
	return max(pagekite.SniffLen, min(limit, 4<<10))
}

// sniffKite reads the first bytes of c, at least pagekite.SniffLen unless
// they can no longer be a kite's request first, at most size. A TLS
// ClientHello starts with 0x16 and is ruled out by its first byte, so TLS
// clients never wait here. kite is true only when the first SniffLen bytes
// match; err is the read error that stopped it early, if any.
func sniffKite(c net.Conn, timeout time.Duration, size int) (first []byte, kite bool, err error) {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, false, err
	}
	defer func() {
		if derr := c.SetReadDeadline(time.Time{}); derr != nil && err == nil {
			err = derr
		}
	}()
	buf := make([]byte, size)
	n := 0
	for n < pagekite.SniffLen {
		var m int
		m, err = c.Read(buf[n:])
		n += m
		if n > 0 && !pagekite.Sniff(buf[:n]) {
			return buf[:n], false, nil
		}
		if err != nil {
			return buf[:n], false, err
		}
	}
	return buf[:n], pagekite.Sniff(buf[:pagekite.SniffLen]), nil
}

// serveKite hands a kite's connection to the PageKite server, replaying
// its first bytes. Like a relay it is not tied to the listener: a kite's
// tunnel outlives a config reload, and the hub closes it on shutdown.
func (r *Router) serveKite(c net.Conn, first []byte) {
	r.cfg.Metrics.Routed(RouteKite)
	err := r.cfg.Kites.ServeConn(context.Background(), &replayConn{Conn: c, first: first})
	r.cfg.Logger.Debug("kite connection ended", zap.String("remote", c.RemoteAddr().String()), zap.Error(err))
}

// replayConn reads first, then from Conn.
type replayConn struct {
	net.Conn
	first []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.first) > 0 {
		n := copy(p, c.first)
		c.first = c.first[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// offline routes a connection for gateway name, which has no live tunnel:
// NAME.ZONE itself to the server's offline page (unless it is off); a
// name below it gets an alert, since no certificate of the cloud covers
// it (*.ZONE covers one label) and the server could only fail the
// handshake with an unexplained alert.
func (r *Router) offline(c net.Conn, sni, name string, toServer func(net.Conn) bool) {
	if !strings.EqualFold(strings.TrimSuffix(sni, "."), name+"."+r.cfg.Zone) {
		r.refuseTLS(c, ReasonBelowOffline, alertUnrecognizedName, name)
		return
	}
	if r.cfg.NoOfflinePage {
		r.refuseTLS(c, ReasonNoSession, alertUnrecognizedName, name)
		return
	}
	r.toServer(c, ReasonNoSession, toServer)
}

// peekFailure classifies an error of clienthello.Peek.
func peekFailure(err error) string {
	switch {
	case errors.Is(err, clienthello.ErrNotTLS):
		return ReasonNotTLS
	case errors.Is(err, clienthello.ErrTooLarge):
		return ReasonTooLarge
	case errors.Is(err, clienthello.ErrMalformed):
		return ReasonMalformed
	case errors.Is(err, os.ErrDeadlineExceeded):
		return ReasonTimeout
	}
	return ReasonClientGone
}

// toServer hands c to the local server; reason, when set, says why a
// gateway's connection was not relayed.
func (r *Router) toServer(c net.Conn, reason string, toServer func(net.Conn) bool) {
	if reason != "" {
		r.cfg.Metrics.Refused(reason)
	}
	if toServer(c) {
		r.cfg.Metrics.Routed(RouteServer)
		return
	}
	r.cfg.Metrics.Refused(ReasonListenerClosed)
	r.cfg.Metrics.Routed(RouteClosed)
}

// refuseTLS counts and logs (rate-limited) a refused TLS connection and
// closes it with a fatal alert.
func (r *Router) refuseTLS(c net.Conn, reason string, alert byte, gateway string, fields ...zap.Field) {
	r.cfg.Metrics.Refused(reason)
	r.cfg.Metrics.Routed(RouteClosed)
	fields = append(fields, zap.String("remote", c.RemoteAddr().String()))
	if gateway != "" {
		fields = append(fields, zap.String("gateway", gateway))
	}
	r.logs.refused(reason, fields...)
	sendAlert(c, alert)
}

// clientAddr is the client's address as this host's socket sees it, IPv4
// unmapped; invalid when the connection has no IP address.
func clientAddr(c net.Conn) netip.AddrPort {
	var ap netip.AddrPort
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	} else if a := c.RemoteAddr(); a != nil {
		ap, _ = netip.ParseAddrPort(a.String())
	}
	if !ap.IsValid() {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// relay copies bytes both ways between the client and the stream until
// both directions have ended (see relay.Conns), then closes both.
func (r *Router) relay(c *clienthello.Conn, st hub.Stream, name string) {
	m := r.cfg.Metrics
	m.Routed(RouteTunnel)
	m.StreamOpened()
	m.ActiveRelays(1)
	defer m.ActiveRelays(-1)
	start := time.Now()
	res := relay.Conns(context.Background(), c, st, relay.Counts{
		AToB: func(n int) { m.Relayed(n, 0) },
		BToA: func(n int) { m.Relayed(0, n) },
	})
	_ = c.Close()
	_ = st.Close()
	r.cfg.Logger.Debug("relay ended",
		zap.String("gateway", name),
		zap.String("remote", c.RemoteAddr().String()),
		zap.Int64("bytes_to_gateway", res.AToB),
		zap.Int64("bytes_to_client", res.BToA),
		zap.Duration("duration", time.Since(start)),
		zap.NamedError("to_gateway_error", res.AToBErr),
		zap.NamedError("to_client_error", res.BToAErr))
}
