package client

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/coder/websocket"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// dial opens the connection to the tunnel endpoint and says which
// transport it carries (tunnel.RawUpgrade or tunnel.TransportWebSocket).
//
// The upgrade request offers the raw transport beside the WebSocket
// (unless WebSocketOnly); a cloud that takes it answers 101 with
// tunnel.RawUpgrade, which rawOffer catches before the WebSocket library
// would reject it, and an older cloud answers as it always did.
//
// When the HTTP client's transport is an *http.Transport that dials plain
// connections, it dials through a copy whose connections are
// tunnel.BatchConns, so that each frame leaves in one write instead of one
// per TLS record (or per 4 KiB, for masked WebSocket frames). Any other
// transport is used as it is.
//
// It also returns the BatchConn, nil when the transport was used as it is.
func (c *Client) dial(ctx context.Context) (tunnel.Conn, string, *tunnel.BatchConn, error) {
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	opts := &websocket.DialOptions{HTTPClient: hc, HTTPHeader: c.HTTPHeader}
	var dialed batchDial
	rt := hc.Transport
	if tr := batchingTransport(rt, &dialed); tr != nil {
		defer tr.CloseIdleConnections()
		rt = tr
	}
	var offer *rawOffer
	if !c.WebSocketOnly {
		if rt == nil {
			rt = http.DefaultTransport
		}
		// The sealed transport needs the plain connection under TLS,
		// which only our own dial gives.
		offer = &rawOffer{base: rt, sealed: dialed.wanted && !c.noSealed.Load()}
		rt = offer
	}
	if rt != hc.Transport {
		wrapped := *hc
		wrapped.Transport = rt
		opts.HTTPClient = &wrapped
	}
	wc, _, err := websocket.Dial(ctx, c.URL, opts)
	if offer != nil {
		if up := offer.take(); up.rwc != nil {
			bc := dialed.get()
			switch {
			case !errors.Is(err, errRawUpgraded):
				// Cannot happen: the upgraded response ended the dial.
				_ = up.rwc.Close()
			case up.sealed == nil:
				return tunnel.RawConn(up.rwc, nil, bc), tunnel.RawUpgrade, bc, nil
			case bc == nil:
				_ = up.rwc.Close()
				return nil, "", nil, errors.New("sealed upgrade without a connection of our own")
			default:
				// From here on the TLS connection's record layer is
				// not used: the sealed records go on the socket under it.
				conn, err := tunnel.SealedConn(bc.Conn, *up.sealed, true)
				if err != nil {
					_ = up.rwc.Close()
					return nil, "", nil, err
				}
				return conn, tunnel.SealedUpgrade, bc, nil
			}
		} else if errors.Is(err, tunnel.ErrSealedBinding) {
			return nil, "", nil, err
		}
	}
	if err != nil {
		return nil, "", nil, err
	}
	if bc := dialed.get(); bc != nil {
		return tunnel.WebSocketClientConn(wc, bc), tunnel.TransportWebSocket, bc, nil
	}
	return tunnel.WebSocketConn(wc), tunnel.TransportWebSocket, nil, nil
}

// errRawUpgraded ends the WebSocket dial when the cloud chose the raw or
// the sealed transport; dial takes the connection from rawOffer.
var errRawUpgraded = errors.New("upgraded to " + tunnel.RawUpgrade)

// rawOffer adds tunnel.RawUpgrade (and tunnel.SealedUpgrade, when sealed)
// to the WebSocket library's upgrade request, after websocket, so that Go's
// transport still sees a WebSocket upgrade (which it keeps on HTTP/1.1) and
// a cloud that does not know them picks websocket from the list.
type rawOffer struct {
	base   http.RoundTripper
	sealed bool

	mu sync.Mutex
	up rawUpgraded
}

// rawUpgraded is the connection of a 101 to the raw or sealed transport;
// sealed holds the keys of the latter.
type rawUpgraded struct {
	rwc    io.ReadWriteCloser
	sealed *tunnel.SealedKeys
}

func (o *rawOffer) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.Header.Add("Upgrade", tunnel.RawUpgrade)
	if o.sealed {
		r.Header.Add("Upgrade", tunnel.SealedUpgrade)
	}
	resp, err := o.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return resp, nil
	}
	var up rawUpgraded
	switch {
	case o.sealed && tunnel.HeaderHasToken(resp.Header, "Upgrade", tunnel.SealedUpgrade):
		keys, err := tunnel.DeriveSealedKeys(resp.TLS)
		if err == nil {
			err = keys.CheckBinding(resp.Header.Get(tunnel.SealedBindingHeader))
		}
		if err != nil {
			_ = resp.Body.Close()
			return nil, err
		}
		up.sealed = &keys
	case tunnel.HeaderHasToken(resp.Header, "Upgrade", tunnel.RawUpgrade):
	default:
		return resp, nil
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		_ = resp.Body.Close()
		return nil, errors.New("raw upgrade: the response body is not writable")
	}
	up.rwc = rwc
	o.mu.Lock()
	o.up = up
	o.mu.Unlock()
	return nil, errRawUpgraded
}

func (o *rawOffer) take() rawUpgraded {
	o.mu.Lock()
	defer o.mu.Unlock()
	up := o.up
	o.up = rawUpgraded{}
	return up
}

// batchDial remembers the connection the transport dialed for the
// upgrade (the transport's only request).
type batchDial struct {
	wanted bool // the transport dials through set
	mu     sync.Mutex
	bc     *tunnel.BatchConn
}

func (d *batchDial) set(bc *tunnel.BatchConn) {
	d.mu.Lock()
	d.bc = bc
	d.mu.Unlock()
}

func (d *batchDial) get() *tunnel.BatchConn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.bc
}

// batchingTransport returns a copy of rt (nil meaning
// http.DefaultTransport) that wraps what it dials in tunnel.BatchConns, or
// nil when rt is not an *http.Transport or dials its TLS connections
// itself, where there is no plain connection to wrap.
func batchingTransport(rt http.RoundTripper, dialed *batchDial) *http.Transport {
	if rt == nil {
		rt = http.DefaultTransport
	}
	base, ok := rt.(*http.Transport)
	//lint:ignore SA1019 a caller may still set the deprecated hooks; honouring them means reading them.
	if !ok || base.DialTLSContext != nil || base.DialTLS != nil || base.Dial != nil { // our DialContext would take precedence over a caller's Dial
		return nil
	}
	tr := base.Clone()
	dialed.wanted = true
	dialContext := tr.DialContext
	if dialContext == nil {
		dialContext = (&net.Dialer{}).DialContext
	}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		bc := tunnel.NewBatchConn(conn)
		dialed.set(bc)
		return bc, nil
	}
	return tr
}
