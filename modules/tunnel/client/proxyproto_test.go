package client

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

// parseProxyHeader is an independent reader of PROXY v2 headers, written
// from the specification, to check what AppendProxyHeader writes.
func parseProxyHeader(b []byte) (local bool, src, dst netip.AddrPort, rest []byte, err error) {
	if len(b) < 16 || !bytes.Equal(b[:12], []byte("\r\n\r\n\x00\r\nQUIT\n")) {
		return false, src, dst, nil, errors.New("no v2 signature")
	}
	if b[12]>>4 != 2 {
		return false, src, dst, nil, errors.New("not version 2")
	}
	n := int(binary.BigEndian.Uint16(b[14:16]))
	if len(b) < 16+n {
		return false, src, dst, nil, errors.New("short address block")
	}
	addrs, rest := b[16:16+n], b[16+n:]
	switch b[12] & 0xf {
	case 0:
		return true, src, dst, rest, nil
	case 1:
	default:
		return false, src, dst, nil, errors.New("bad command")
	}
	switch b[13] {
	case 0x11:
		if n < 12 {
			return false, src, dst, nil, errors.New("short ipv4 block")
		}
		s, _ := netip.AddrFromSlice(addrs[0:4])
		d, _ := netip.AddrFromSlice(addrs[4:8])
		src = netip.AddrPortFrom(s, binary.BigEndian.Uint16(addrs[8:10]))
		dst = netip.AddrPortFrom(d, binary.BigEndian.Uint16(addrs[10:12]))
	case 0x21:
		if n < 36 {
			return false, src, dst, nil, errors.New("short ipv6 block")
		}
		s, _ := netip.AddrFromSlice(addrs[0:16])
		d, _ := netip.AddrFromSlice(addrs[16:32])
		src = netip.AddrPortFrom(s, binary.BigEndian.Uint16(addrs[32:34]))
		dst = netip.AddrPortFrom(d, binary.BigEndian.Uint16(addrs[34:36]))
	default:
		return false, src, dst, nil, errors.New("unexpected family")
	}
	return false, src, dst, rest, nil
}

func TestProxyHeader(t *testing.T) {
	ap := netip.MustParseAddrPort
	tests := []struct {
		name             string
		src, dst         netip.AddrPort
		wantLocal        bool
		wantSrc, wantDst netip.AddrPort
	}{
		{"ipv4", ap("203.0.113.7:51000"), ap("192.168.1.10:443"), false, ap("203.0.113.7:51000"), ap("192.168.1.10:443")},
		{"ipv6", ap("[2001:db8::1]:40000"), ap("[fd00::10]:8443"), false, ap("[2001:db8::1]:40000"), ap("[fd00::10]:8443")},
		{"mixed", ap("[2001:db8::1]:40000"), ap("192.168.1.10:443"), false, ap("[2001:db8::1]:40000"), ap("[::ffff:192.168.1.10]:443")},
		{"mapped ipv4 unmapped", ap("[::ffff:198.51.100.2]:1234"), ap("10.0.0.1:80"), false, ap("198.51.100.2:1234"), ap("10.0.0.1:80")},
		{"no destination", ap("198.51.100.2:1234"), netip.AddrPort{}, false, ap("198.51.100.2:1234"), ap("0.0.0.0:0")},
		{"unknown client", netip.AddrPort{}, ap("10.0.0.1:80"), true, netip.AddrPort{}, netip.AddrPort{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteProxyHeader(&buf, tt.src, tt.dst); err != nil {
				t.Fatal(err)
			}
			buf.WriteString("GET / HTTP/1.1\r\n")
			local, src, dst, rest, err := parseProxyHeader(buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if local != tt.wantLocal || src != tt.wantSrc || dst != tt.wantDst {
				t.Fatalf("parsed local=%v %v -> %v, want local=%v %v -> %v", local, src, dst, tt.wantLocal, tt.wantSrc, tt.wantDst)
			}
			if string(rest) != "GET / HTTP/1.1\r\n" {
				t.Fatalf("header length wrong: rest %q", rest)
			}
		})
	}
}

// The bytes for one known case, from the specification's layout.
func TestProxyHeaderBytes(t *testing.T) {
	got := AppendProxyHeader(nil, netip.MustParseAddrPort("1.2.3.4:256"), netip.MustParseAddrPort("5.6.7.8:443"))
	want := []byte{
		0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
		0x21, 0x11, 0x00, 0x0C,
		1, 2, 3, 4, 5, 6, 7, 8,
		0x01, 0x00, 0x01, 0xBB,
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got  % x\nwant % x", got, want)
	}
}
