package tunnel_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// The cloud relays an ingress TLS connection, whose ClientHello named a
// gateway, down that gateway's tunnel. If Open fails (no session, or the
// agent refused because its upstream is down), nothing has been forwarded
// yet, so the cloud can still answer with its "gateway offline" page.
func Example_relay() {
	var h hub.Hub // registered by hub.ServeTunnel on the tunnel route
	errOffline := errors.New("gateway offline")

	relay := func(ctx context.Context, client net.Conn, gateway string) error {
		s, ok := h.Lookup(gateway)
		if !ok {
			return errOffline
		}
		clientAddr, _ := netip.ParseAddrPort(client.RemoteAddr().String())
		st, err := s.Open(ctx, tunnel.Meta{Gateway: gateway, Client: clientAddr})
		if err != nil {
			return errors.Join(errOffline, err)
		}
		defer st.Close()
		// Both directions, each half-closing the other side when its
		// source ends, as TLS close_notify and HTTP/1.0 bodies expect.
		up := make(chan struct{})
		go func() {
			defer close(up)
			_, _ = io.Copy(st, client)
			_ = st.CloseWrite()
		}()
		_, _ = io.Copy(client, st)
		if tc, ok := client.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		<-up
		return nil
	}
	_ = relay
}
