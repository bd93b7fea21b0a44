//go:build !linux

package dnszone

import (
	"net"
)

// udpLoop is Linux only (recvmmsg, sendmmsg); elsewhere every socket is
// served by miekg/dns.
type udpLoop struct{ conn *net.UDPConn }

func newUDPLoop(*Handler, net.PacketConn, int) (*udpLoop, error) { return nil, nil }

func (*udpLoop) run(func() bool) error { return nil }
