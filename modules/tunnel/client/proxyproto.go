package client

import (
	"encoding/binary"
	"io"
	"net/netip"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// proxySignature opens every PROXY protocol v2 header (section 2.2 of
// haproxy's proxy-protocol.txt).
var proxySignature = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

const (
	proxyVersion2 = 0x20
	proxyLocal    = 0x0 // command: no addresses, a health check or unknown origin
	proxyProxy    = 0x1 // command: relayed connection, addresses follow
	proxyTCP4     = 0x11
	proxyTCP6     = 0x21
	proxyUnspec   = 0x00
)

// AppendProxyHeader appends a PROXY protocol v2 header that tells an
// upstream the connection came from src and was addressed to dst, over TCP.
// When src is not valid (the cloud did not know the client) the header uses
// the LOCAL command, which upstreams take as "use the connection's own
// addresses". An invalid dst becomes the unspecified address of src's family,
// port 0. An IPv4 address paired with an IPv6 one is sent IPv4-mapped.
func AppendProxyHeader(b []byte, src, dst netip.AddrPort) []byte {
	b = append(b, proxySignature[:]...)
	if !src.IsValid() {
		return append(b, proxyVersion2|proxyLocal, proxyUnspec, 0, 0)
	}
	s := src.Addr().Unmap()
	var d netip.Addr
	var dport uint16
	if dst.IsValid() {
		d, dport = dst.Addr().Unmap(), dst.Port()
	} else if s.Is4() {
		d = netip.IPv4Unspecified()
	} else {
		d = netip.IPv6Unspecified()
	}
	if s.Is4() && d.Is4() {
		b = append(b, proxyVersion2|proxyProxy, proxyTCP4, 0, 12)
		s4, d4 := s.As4(), d.As4()
		b = append(b, s4[:]...)
		b = append(b, d4[:]...)
	} else {
		b = append(b, proxyVersion2|proxyProxy, proxyTCP6, 0, 36)
		s16, d16 := s.As16(), d.As16()
		b = append(b, s16[:]...)
		b = append(b, d16[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dport)
}

// WriteProxyHeader writes the header of AppendProxyHeader to w, typically
// the connection to the upstream, before any of the stream's data.
func WriteProxyHeader(w io.Writer, src, dst netip.AddrPort) error {
	_, err := w.Write(AppendProxyHeader(make([]byte, 0, 16+36), src, dst))
	return err
}

// StreamProxyHeader is the PROXY header for a stream: from the Initiator's
// ClientAddr to its Ip:Port (each left out when absent or unparsable).
func StreamProxyHeader(st *tunnel.Stream) []byte {
	init := st.Initiator()
	src, _ := netip.ParseAddrPort(init.ClientAddr)
	var dst netip.AddrPort
	if ip, err := netip.ParseAddr(init.Ip); err == nil {
		dst = netip.AddrPortFrom(ip, init.Port)
	}
	return AppendProxyHeader(nil, src, dst)
}
