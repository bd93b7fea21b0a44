// Command fixedserver is the ceiling of the DNS benchmark: a miekg/dns
// server answering every query with one fixed A record, nothing else.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/miekg/dns"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:5301", "UDP address to serve")
	flag.Parse()
	pc, err := net.ListenPacket("udp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	ip := net.IPv4(203, 0, 113, 10).To4()
	srv := &dns.Server{PacketConn: pc, UDPSize: 4096, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		if len(r.Question) == 1 {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: ip}}
		}
		_ = w.WriteMsg(m)
	})}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	srv.NotifyStartedFunc = func() { fmt.Printf("fixedserver: serving udp/%s\n", pc.LocalAddr()) }
	go func() { errc <- srv.ActivateAndServe() }()
	select {
	case <-ctx.Done():
		_ = srv.ShutdownContext(context.Background())
		<-errc
	case err := <-errc:
		log.Fatal(err)
	}
}
