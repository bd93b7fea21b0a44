package dnszone

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"time"
	"unsafe"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// udpBatch is how many datagrams one recvmmsg/sendmmsg moves: enough to
// amortize the syscall under load (the profile before batching had
// sendmsg and recvmsg at 37% of the samples), small enough that the
// buffers of every reader stay in cache.
const udpBatch = 32

// batchConn is what ipv4.PacketConn and ipv6.PacketConn have in common
// (their Message types are both socket.Message).
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// udpLoop serves one UDP socket with batched reads and writes. Several
// loops share a socket (one per core): the kernel hands each recvmmsg
// whatever is queued, and one loop answers its batch while another reads.
type udpLoop struct {
	h       *Handler
	conn    *net.UDPConn
	bc      batchConn
	is6     bool
	pktinfo bool
	size    int
}

// newUDPLoop returns a batched loop for pc when it is, or wraps (Caddy's
// reload-safe sockets have Unwrap), a *net.UDPConn on Linux; nil otherwise,
// and the server falls back to miekg/dns's reader.
func newUDPLoop(h *Handler, pc net.PacketConn, size int) (*udpLoop, error) {
	conn := unwrapUDP(pc)
	if conn == nil {
		return nil, nil
	}
	la, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		return nil, nil
	}
	l := &udpLoop{h: h, conn: conn, size: size, is6: la.IP.To4() == nil}
	// On a wildcard address the reply must leave from the address the
	// query was sent to, or the client drops it: ask the kernel for the
	// destination of every datagram.
	l.pktinfo = la.IP.IsUnspecified()
	if l.is6 {
		p := ipv6.NewPacketConn(conn)
		if l.pktinfo {
			if err := p.SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true); err != nil {
				return nil, err
			}
		}
		l.bc = p
	} else {
		p := ipv4.NewPacketConn(conn)
		if l.pktinfo {
			if err := p.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true); err != nil {
				return nil, err
			}
		}
		l.bc = p
	}
	return l, nil
}

func unwrapUDP(pc net.PacketConn) *net.UDPConn {
	for range 8 {
		switch c := pc.(type) {
		case *net.UDPConn:
			return c
		case interface{ Unwrap() net.PacketConn }:
			pc = c.Unwrap()
		default:
			return nil
		}
	}
	return nil
}

// udpSlot is one datagram of a batch and its reply; a slot's buffers live
// as long as its loop.
type udpSlot struct {
	in, out  []byte
	oob      []byte
	outOOB   []byte
	reply    int
	addr     net.Addr
	hasReply bool
}

// run reads and answers until the socket fails or is closed; stopping
// tells a closing socket from a failure.
func (l *udpLoop) run(stopping func() bool) error {
	slots := make([]udpSlot, udpBatch)
	in := make([]ipv4.Message, udpBatch)
	out := make([]ipv4.Message, 0, udpBatch)
	oobSize := 0
	if l.pktinfo {
		oobSize = 128
	}
	for i := range slots {
		s := &slots[i]
		s.in = make([]byte, l.size)
		s.out = make([]byte, 0, max(l.size, dns.MaxMsgSize/8))
		if oobSize > 0 {
			s.oob = make([]byte, oobSize)
			s.outOOB = make([]byte, 0, oobSize)
		}
		in[i].Buffers = [][]byte{s.in}
		in[i].OOB = s.oob
	}
	w := &batchWriter{}
	for {
		for i := range in {
			in[i].OOB = slots[i].oob
		}
		n, err := l.bc.ReadBatch(in, 0)
		if err != nil {
			if stopping() {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// Someone else moved the deadline (a shared socket):
				// clear it and read on.
				_ = l.conn.SetReadDeadline(time.Time{})
				continue
			}
			return err
		}
		out = out[:0]
		for i := range n {
			m := &in[i]
			s := &slots[i]
			s.hasReply = false
			s.addr = m.Addr
			w.slot, w.loop = s, l
			l.serve(w, s.in[:m.N])
			if !s.hasReply {
				continue
			}
			om := ipv4.Message{Buffers: [][]byte{s.out[:s.reply]}, Addr: m.Addr}
			if l.pktinfo {
				om.OOB = l.replyOOB(s, m.OOB[:m.NN])
			}
			out = append(out, om)
		}
		l.writeAll(out)
	}
}

// writeAll sends the replies of a batch; a datagram the kernel refuses is
// counted and skipped, so one bad address cannot hold up the others.
func (l *udpLoop) writeAll(out []ipv4.Message) {
	for len(out) > 0 {
		n, err := l.bc.WriteBatch(out, 0)
		if err != nil {
			if n <= 0 {
				n = 1
			}
			l.h.stats.writeErrors.Add(1)
		}
		out = out[n:]
	}
}

// serve does for one datagram what miekg/dns's server does before and
// around the handler: drop what has no header, ignore responses, answer
// FORMERR to what does not unpack.
func (l *udpLoop) serve(w *batchWriter, b []byte) {
	h := l.h
	// ServeDNS recovers its own panics; this guards the unpacking, so
	// that no datagram can end a loop (and with it the socket's service).
	defer func() {
		if p := recover(); p != nil {
			h.stats.panics.Add(1)
			w.slot.hasReply = false
			h.log.Error("dns datagram panicked", "panic", p)
		}
	}()
	if len(b) < 12 {
		h.stats.malformed.Add(1)
		return
	}
	if b[2]&0x80 != 0 {
		// A response: answering it could loop between two servers.
		return
	}
	if req, ok := w.fast.unpack(b); ok {
		h.ServeDNS(w, req)
		return
	}
	req := new(dns.Msg)
	if err := req.Unpack(b); err != nil {
		h.stats.malformed.Add(1)
		// As miekg/dns: the header (and the question, if it unpacked)
		// echoed with FORMERR and nothing else.
		req.SetRcodeFormatError(req)
		req.Zero = false
		req.Ns, req.Answer, req.Extra = nil, nil, nil
		_ = w.WriteMsg(req)
		return
	}
	h.ServeDNS(w, req)
}

// replyOOB builds the control message that makes the reply leave from the
// address the query came to, from the query's packet info.
func (l *udpLoop) replyOOB(s *udpSlot, oob []byte) []byte {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		clen := int(h.Len)
		if clen < unix.SizeofCmsghdr || clen > len(oob) {
			return nil
		}
		data := oob[unix.SizeofCmsghdr:clen]
		switch {
		case !l.is6 && h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			// in_pktinfo: ifindex, spec_dst, addr. Sending with spec_dst
			// set to the query's destination and no interface lets the
			// routing table choose the way out, as miekg/dns does.
			s.outOOB = append(s.outOOB[:0], oob[:min(unix.CmsgSpace(unix.SizeofInet4Pktinfo), len(oob))]...)
			d := s.outOOB[unix.SizeofCmsghdr:]
			binary.NativeEndian.PutUint32(d[0:4], 0)
			copy(d[4:8], data[8:12])
			return s.outOOB
		case l.is6 && h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			// in6_pktinfo: addr, ifindex; the interface is kept, which
			// link-local destinations need.
			s.outOOB = append(s.outOOB[:0], oob[:min(unix.CmsgSpace(unix.SizeofInet6Pktinfo), len(oob))]...)
			return s.outOOB
		}
		oob = oob[min(unix.CmsgSpace(clen-unix.SizeofCmsghdr), len(oob)):]
	}
	return nil
}

// batchWriter is the dns.ResponseWriter of a batched datagram: WriteMsg
// packs into the slot's reply buffer, which the loop sends with the rest
// of the batch.
type batchWriter struct {
	loop *udpLoop
	slot *udpSlot
	// fast is the loop's reused query, valid until the next datagram.
	fast fastQuery
}

var _ dns.ResponseWriter = (*batchWriter)(nil)

func (w *batchWriter) LocalAddr() net.Addr { return w.loop.conn.LocalAddr() }

func (w *batchWriter) RemoteAddr() net.Addr { return w.slot.addr }

func (w *batchWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.PackBuffer(w.slot.out[:cap(w.slot.out)])
	if err != nil {
		return err
	}
	return w.keep(b)
}

func (w *batchWriter) Write(b []byte) (int, error) {
	if err := w.keep(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// keep makes b the slot's reply; PackBuffer returns the slot's own buffer
// unless the message outgrew it, and then the bigger buffer is kept.
func (w *batchWriter) keep(b []byte) error {
	s := w.slot
	if len(b) > cap(s.out) || (len(b) > 0 && &b[0] != &s.out[:1][0]) {
		s.out = append(s.out[:0], b...)
	}
	s.reply = len(b)
	s.hasReply = true
	return nil
}

func (w *batchWriter) Close() error        { return nil }
func (w *batchWriter) TsigStatus() error   { return nil }
func (w *batchWriter) TsigTimersOnly(bool) {}
func (w *batchWriter) Hijack()             {}
