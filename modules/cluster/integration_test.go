package cluster

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools/testcert"
	"github.com/gatehouse-project/gatehouse/modules/cluster/link"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// echoTunnel is a local tunnel whose streams are connections to a TCP
// echo server.
type echoTunnel struct{ addr string }

func (e echoTunnel) Open(ctx context.Context, _ tunnel.Meta) (hub.Stream, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", e.addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}
func (echoTunnel) Done() <-chan struct{}        { return nil }
func (echoTunnel) Err() error                   { return nil }
func (echoTunnel) CloseWithReason(string) error { return nil }
func (echoTunnel) Kind() string                 { return "echo" }

type oneGateway struct {
	name string
	t    hub.Tunnel
}

func (o oneGateway) Lookup(name string) (hub.Tunnel, bool) { return o.t, name == o.name }

func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}

// TestLinkOverMembership wires members and links as a node would: the
// directory says who holds a gateway, the link reaches it, and the link
// admits only live members.
func TestLinkOverMembership(t *testing.T) {
	f := newFixture(t, 1500*time.Millisecond)
	ca := testcert.MustCA(t, testcert.Options{DNSNames: []string{"cluster ca"}})
	start := func(name, ip string, local link.Local) (*Member, *link.Link) {
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m, err := Join(ctx, f.dsn, Self{Name: name, LinkAddr: ln.Addr().String()}, Options{Lease: f.lease, Schema: f.schema})
		if err != nil {
			t.Fatal(err)
		}
		cert := ca.MustIssue(t, testcert.Options{DNSNames: []string{name},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
		l, err := link.New(link.Config{Name: name, Cert: cert.TLS(), CA: ca.Pool(), Peers: m, Local: local})
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- l.Serve(ln) }()
		t.Cleanup(func() {
			_ = l.Close()
			<-served
			_ = m.Close()
		})
		return m, l
	}
	a, la := start("node-a", "127.0.0.1", nil)
	b, _ := start("node-b", "127.0.0.2", oneGateway{"home", echoTunnel{echoServer(t)}})
	c, lc := start("node-c", "127.0.0.3", nil)
	b.Hold("home")
	within(t, time.Second, "a sees home on b", func() bool { return len(a.Holders("home")) == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	holder := a.Holders("home")[0]
	st, err := la.Relay(holder.Name).Open(ctx, tunnel.Meta{Gateway: "home"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("hello through the link")); err != nil {
		t.Fatal(err)
	}
	_ = st.CloseWrite()
	got, err := io.ReadAll(st)
	_ = st.Close()
	if err != nil || string(got) != "hello through the link" {
		t.Fatalf("echo: %q, %v", got, err)
	}

	// c reaches home too, over its own session to b.
	st, err = lc.Relay("node-b").Open(ctx, tunnel.Meta{Gateway: "home"})
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Close()

	// c dies: once its lease is out, b no longer admits its streams on
	// the session that is still up, nor a new link.
	c.halt()
	within(t, f.lease+time.Second, "b drops c", func() bool { _, ok := b.Node("node-c"); return !ok })
	_, err = lc.Relay("node-b").Open(ctx, tunnel.Meta{Gateway: "home"})
	if re, ok := errors.AsType[*tunnel.RefusedError](err); !ok || re.Reason != link.ReasonNotMember {
		t.Fatalf("a dead member's stream on its live session: %v, want refusal %q", err, link.ReasonNotMember)
	}
	// The dead node's process, still believing b a member, dials it
	// with its valid certificate: b refuses the TLS handshake.
	bNode, _ := a.Node("node-b")
	cert := ca.MustIssue(t, testcert.Options{DNSNames: []string{"node-c"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	ghost, err := link.New(link.Config{Name: "node-c", Cert: cert.TLS(), CA: ca.Pool(), Peers: staticPeers{"node-b": bNode.LinkAddr}})
	if err != nil {
		t.Fatal(err)
	}
	defer ghost.Close()
	_, err = ghost.Relay("node-b").Open(ctx, tunnel.Meta{Gateway: "home"})
	if err == nil || errors.Is(err, link.ErrNoPeer) || errors.Is(err, tunnel.ErrRefused) {
		t.Fatalf("a dead member's link: %v, want a TLS refusal by node-b", err)
	}
}

type staticPeers map[string]string

func (s staticPeers) Peer(name string) (string, bool) { a, ok := s[name]; return a, ok }
