package client

import (
	"context"
	"net"
	"net/http"
	"sync"

	"github.com/coder/websocket"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// dial opens the WebSocket to the tunnel endpoint. When the HTTP client's
// transport is an *http.Transport that dials plain connections, it dials
// through a copy whose connections are tunnel.BatchConns, so that each
// masked frame leaves in one write instead of one per 4 KiB. Any other
// transport is used as it is.
//
// It also returns the BatchConn, nil when the transport was used as it is.
func (c *Client) dial(ctx context.Context) (tunnel.Conn, *tunnel.BatchConn, error) {
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	opts := &websocket.DialOptions{HTTPClient: hc, HTTPHeader: c.HTTPHeader}
	var dialed batchDial
	if tr := batchingTransport(hc.Transport, &dialed); tr != nil {
		defer tr.CloseIdleConnections()
		batched := *hc
		batched.Transport = tr
		opts.HTTPClient = &batched
	}
	wc, _, err := websocket.Dial(ctx, c.URL, opts)
	if err != nil {
		return nil, nil, err
	}
	if bc := dialed.get(); bc != nil {
		return tunnel.WebSocketClientConn(wc, bc), bc, nil
	}
	return tunnel.WebSocketConn(wc), nil, nil
}

// batchDial remembers the connection the transport dialed for the
// WebSocket (the upgrade is the transport's only request).
type batchDial struct {
	mu sync.Mutex
	bc *tunnel.BatchConn
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
