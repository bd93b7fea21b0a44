package client

import (
	"context"
	"errors"
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
		if up := offer.take(); up.RWC != nil {
			bc := dialed.get()
			switch {
			case !errors.Is(err, errRawUpgraded):
				// Cannot happen: the upgraded response ended the dial.
				_ = up.RWC.Close()
			case up.Sealed == nil:
				return tunnel.RawConn(up.RWC, nil, bc), tunnel.RawUpgrade, bc, nil
			case bc == nil:
				_ = up.RWC.Close()
				return nil, "", nil, errors.New("sealed upgrade without a connection of our own")
			default:
				// From here on the TLS connection's record layer is
				// not used: the sealed records go on the socket under it.
				conn, err := tunnel.SealedConn(bc.Conn, *up.Sealed, true)
				if err != nil {
					_ = up.RWC.Close()
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

// rawOffer adds the raw and sealed transports to the WebSocket library's
// upgrade request (tunnel.OfferUpgrades; the sealed one when sealed) and
// keeps the connection of a 101 that chose one of them.
type rawOffer struct {
	base   http.RoundTripper
	sealed bool

	mu sync.Mutex
	up tunnel.Upgraded
}

func (o *rawOffer) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	tunnel.OfferUpgrades(r.Header, o.sealed)
	resp, err := o.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	up, ok, err := tunnel.TakeUpgrade(resp, o.sealed)
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return resp, nil
	}
	o.mu.Lock()
	o.up = up
	o.mu.Unlock()
	return nil, errRawUpgraded
}

func (o *rawOffer) take() tunnel.Upgraded {
	o.mu.Lock()
	defer o.mu.Unlock()
	up := o.up
	o.up = tunnel.Upgraded{}
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
