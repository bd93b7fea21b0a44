// Package cnamedns is a small recursive-resolver stand-in for tests: a
// miekg/dns server on 127.0.0.1 that answers CNAME records the test sets,
// so that custom-domain checks ask a real DNS server over the wire.
package cnamedns

import (
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Server answers the CNAMEs set with Set; every other name is NXDOMAIN.
type Server struct {
	// Addr is the UDP address, 127.0.0.1:PORT.
	Addr string

	mu     sync.Mutex
	cnames map[string]string
	// refuse makes every answer REFUSED (a resolver that cannot help).
	refuse bool
}

// Start runs a server until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cnamedns: %v", err)
	}
	s := &Server{Addr: pc.LocalAddr().String(), cnames: map[string]string{}}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serve)}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return s
}

// Set makes name a CNAME to target (both taken as absolute).
func (s *Server) Set(name, target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cnames[strings.ToLower(dns.Fqdn(name))] = dns.Fqdn(target)
}

// Remove deletes name's CNAME.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.cnames, strings.ToLower(dns.Fqdn(name)))
}

// Refuse makes the server answer REFUSED to everything (or not).
func (s *Server) Refuse(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuse = on
}

func (s *Server) serve(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	s.mu.Lock()
	refuse := s.refuse
	target, ok := "", false
	if len(q.Question) == 1 {
		target, ok = s.cnames[strings.ToLower(q.Question[0].Name)]
	}
	s.mu.Unlock()
	switch {
	case refuse:
		m.Rcode = dns.RcodeRefused
	case !ok:
		m.Rcode = dns.RcodeNameError
	default:
		m.Answer = append(m.Answer, &dns.CNAME{
			Hdr:    dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60},
			Target: target,
		})
	}
	_ = w.WriteMsg(m)
}
