package link

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// ErrMalformed: a link stream's Initiator does not describe a stream.
var ErrMalformed = errors.New("malformed link stream")

// sep separates the fields packed into a link Initiator's Gatename. It
// cannot occur in a DNS name, so it never splits one.
const sep = "|"

// maxGatename is the wire's bound on Gatename.
const maxGatename = 253

// encodeMeta is m as a link stream's Initiator. The link carries the whole
// Meta (the receiving node opens the real stream with it), while the wire
// Initiator has fields for the destination and the client only: Dest goes
// in Ip and Port and Client in ClientAddr as on any leg, and Gatename
// carries "GATEWAY" or "GATEWAY|SOURCE|SERVERNAME". The server name is
// dropped when it does not fit in the wire's 253 bytes: the gateway reads
// it in the ClientHello anyway.
func encodeMeta(m tunnel.Meta) (tunnel.Initiator, error) {
	if m.Gateway == "" || strings.Contains(m.Gateway, sep) || strings.Contains(m.Source, sep) || strings.Contains(m.ServerName, sep) {
		return tunnel.Initiator{}, fmt.Errorf("%w: gateway %q, source %q, server name %q", ErrMalformed, m.Gateway, m.Source, m.ServerName)
	}
	init := tunnel.Initiator{Gatename: m.Gateway}
	if m.Source != "" || m.ServerName != "" {
		init.Gatename = m.Gateway + sep + m.Source + sep + m.ServerName
		if len(init.Gatename) > maxGatename {
			init.Gatename = m.Gateway + sep + m.Source + sep
		}
	}
	if len(init.Gatename) > maxGatename {
		return tunnel.Initiator{}, fmt.Errorf("%w: names too long", ErrMalformed)
	}
	if m.Dest.IsValid() {
		init.Ip = m.Dest.Addr().String()
		init.Port = m.Dest.Port()
	}
	if m.Client.IsValid() {
		init.ClientAddr = m.Client.String()
	}
	return init, nil
}

// encodeMetaEarly is encodeMeta for a stream opened with early bytes of
// early data (Relay.OpenEarly): Gatename carries
// "GATEWAY|SOURCE|SERVERNAME|EARLY", so that the receiving node knows how
// many bytes to wait for before it opens its own leg. Only nodes that speak
// the raw transport read the fourth field; older ones refuse it as
// malformed, so the opener sends it only to those.
func encodeMetaEarly(m tunnel.Meta, early int) (tunnel.Initiator, error) {
	if early <= 0 || early > tunnel.MaxEarlyData {
		return tunnel.Initiator{}, fmt.Errorf("%w: %d bytes of early data", ErrMalformed, early)
	}
	init, err := encodeMeta(m)
	if err != nil {
		return init, err
	}
	suffix := sep + strconv.Itoa(early)
	if !strings.Contains(init.Gatename, sep) {
		init.Gatename += sep + sep
	}
	init.Gatename += suffix
	if len(init.Gatename) > maxGatename {
		// As in encodeMeta: the server name goes first.
		init.Gatename = m.Gateway + sep + m.Source + sep + suffix
		if len(init.Gatename) > maxGatename {
			return tunnel.Initiator{}, fmt.Errorf("%w: names too long", ErrMalformed)
		}
	}
	return init, nil
}

// decodeMetaEarly is decodeMeta that also reads the early-data length of
// encodeMetaEarly (0 when the Initiator has none).
func decodeMetaEarly(init tunnel.Initiator) (tunnel.Meta, int, error) {
	parts := strings.Split(init.Gatename, sep)
	if len(parts) != 4 {
		m, err := decodeMeta(init)
		return m, 0, err
	}
	early, err := strconv.Atoi(parts[3])
	if err != nil || early <= 0 || early > tunnel.MaxEarlyData || parts[3] != strconv.Itoa(early) {
		return tunnel.Meta{}, 0, fmt.Errorf("%w: early data length %q", ErrMalformed, parts[3])
	}
	init.Gatename = strings.Join(parts[:3], sep)
	m, err := decodeMeta(init)
	return m, early, err
}

// decodeMeta reads a link stream's Initiator back into the Meta the
// opening node gave.
func decodeMeta(init tunnel.Initiator) (tunnel.Meta, error) {
	var m tunnel.Meta
	parts := strings.Split(init.Gatename, sep)
	switch len(parts) {
	case 1:
		m.Gateway = parts[0]
	case 3:
		m.Gateway, m.Source, m.ServerName = parts[0], parts[1], parts[2]
	default:
		return m, fmt.Errorf("%w: gatename %q", ErrMalformed, init.Gatename)
	}
	if m.Gateway == "" {
		return m, fmt.Errorf("%w: no gateway", ErrMalformed)
	}
	if init.Ip != "" {
		ip, err := netip.ParseAddr(init.Ip)
		if err != nil {
			return m, fmt.Errorf("%w: destination: %w", ErrMalformed, err)
		}
		m.Dest = netip.AddrPortFrom(ip, init.Port)
	} else if init.Port != 0 {
		return m, fmt.Errorf("%w: destination port without address", ErrMalformed)
	}
	if init.ClientAddr != "" {
		ap, err := netip.ParseAddrPort(init.ClientAddr)
		if err != nil {
			return m, fmt.Errorf("%w: client: %w", ErrMalformed, err)
		}
		m.Client = ap
	}
	return m, nil
}
