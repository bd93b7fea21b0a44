package dnszone

import (
	"encoding/binary"

	"github.com/miekg/dns"
)

// fastQuery unpacks the common query into a reused message without
// miekg/dns's general unpacker: a header with opcode QUERY and QR clear,
// one question whose name is plain hostname labels (letters, digits,
// hyphen, underscore: nothing to escape), no answer or authority records,
// and at most one additional record, an OPT owned by the root with no
// options, ending exactly at the end of the datagram. It reports false for
// anything else, and the caller unpacks with miekg/dns, so the handler
// sees exactly the message dns.Msg.Unpack would have made (FuzzFastQuery
// holds it to that).
type fastQuery struct {
	msg  dns.Msg
	q    [1]dns.Question
	opt  dns.OPT
	rr   [1]dns.RR
	name []byte
}

func (f *fastQuery) unpack(b []byte) (*dns.Msg, bool) {
	if len(b) < 12+1+4 {
		return nil, false
	}
	bits := binary.BigEndian.Uint16(b[2:])
	qd, an, ns, ar := binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:]),
		binary.BigEndian.Uint16(b[8:]), binary.BigEndian.Uint16(b[10:])
	if bits&(1<<15) != 0 || (bits>>11)&0xF != dns.OpcodeQuery || qd != 1 || an != 0 || ns != 0 || ar > 1 {
		return nil, false
	}
	// The name, as unpackDomainName writes it: labels joined by dots,
	// with a final dot; "." for the root.
	off := 12
	name := f.name[:0]
	for {
		if off >= len(b) {
			return nil, false
		}
		n := int(b[off])
		off++
		if n == 0 {
			break
		}
		// No compression pointer, no extended label type; and the name
		// stays below the 255 bytes of the wire limit.
		if n > 63 || off+n > len(b) || len(name)+n+1 > 253 {
			return nil, false
		}
		for _, c := range b[off : off+n] {
			if !hostByte(c) {
				return nil, false
			}
		}
		name = append(name, b[off:off+n]...)
		name = append(name, '.')
		off += n
	}
	if len(name) == 0 {
		name = append(name, '.')
	}
	f.name = name
	if off+4 > len(b) {
		return nil, false
	}
	qtype, qclass := binary.BigEndian.Uint16(b[off:]), binary.BigEndian.Uint16(b[off+2:])
	off += 4
	m := &f.msg
	*m = dns.Msg{}
	m.Id = binary.BigEndian.Uint16(b)
	m.Opcode = dns.OpcodeQuery
	m.Authoritative = bits&(1<<10) != 0
	m.Truncated = bits&(1<<9) != 0
	m.RecursionDesired = bits&(1<<8) != 0
	m.RecursionAvailable = bits&(1<<7) != 0
	m.Zero = bits&(1<<6) != 0
	m.AuthenticatedData = bits&(1<<5) != 0
	m.CheckingDisabled = bits&(1<<4) != 0
	m.Rcode = int(bits & 0xF)
	f.q[0] = dns.Question{Name: string(name), Qtype: qtype, Qclass: qclass}
	m.Question = f.q[:]
	if ar == 0 {
		return m, off == len(b)
	}
	// OPT: root owner, type 41, class = UDP size, TTL = extended rcode,
	// version and flags, no options.
	if off+11 != len(b) || b[off] != 0 || binary.BigEndian.Uint16(b[off+1:]) != dns.TypeOPT ||
		binary.BigEndian.Uint16(b[off+9:]) != 0 {
		return nil, false
	}
	f.opt = dns.OPT{Hdr: dns.RR_Header{
		Name:   ".",
		Rrtype: dns.TypeOPT,
		Class:  binary.BigEndian.Uint16(b[off+3:]),
		Ttl:    binary.BigEndian.Uint32(b[off+5:]),
	}}
	f.rr[0] = &f.opt
	m.Extra = f.rr[:]
	m.Rcode |= f.opt.ExtendedRcode()
	return m, true
}

// hostByte reports the bytes a name label may hold without miekg/dns
// escaping them in its presentation form.
func hostByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}
