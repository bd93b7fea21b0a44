package link

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/testcert"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// echoServer echoes every connection until the test ends.
func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); _, _ = io.Copy(c, c) })
		}
	})
	return ln.Addr().String()
}

// roundTrip opens a stream to gateway "home" through r and echoes a line.
func roundTrip(t *testing.T, r *Relay) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := r.Open(ctx, tunnel.Meta{Gateway: "home", ServerName: "home.box.example.org"})
	if err != nil {
		t.Fatalf("open through %s: %v", r.Node(), err)
	}
	defer st.Close()
	if _, err := st.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "ping\n" {
		t.Fatalf("echo through %s: %q, %v", r.Node(), buf, err)
	}
}

// serverSerial is the serial of the certificate the link at addr presents
// to a new TLS session from a member's certificate.
func serverSerial(t *testing.T, addr, serverName string, client tls.Certificate, ca *x509.CertPool) *big.Int {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{Certificates: []tls.Certificate{client}, RootCAs: ca,
		ServerName: serverName, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatalf("TLS to %s: %v", serverName, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

// A certificate of a few seconds is issued again at two thirds of its
// life: new link sessions, as client and as server, present the new one,
// and a session opened with the old one outlives it.
func TestRenewingCertificate(t *testing.T) {
	c := newCluster(t)
	// Long enough that the first session opens before the renewal is
	// due (x509 times have whole seconds), even on a loaded machine.
	const life = 6 * time.Second
	var issued []*x509.Certificate
	var mu sync.Mutex
	issue := func() (tls.Certificate, error) {
		// x509 times have whole seconds.
		nb := time.Now().Truncate(time.Second)
		cert, err := c.ca.Issue(testcert.Options{DNSNames: []string{"node-a"}, NotBefore: nb, NotAfter: nb.Add(life),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
		if err != nil {
			return tls.Certificate{}, err
		}
		mu.Lock()
		issued = append(issued, cert.Leaf)
		mu.Unlock()
		return cert.TLS(), nil
	}
	renewing, err := NewRenewing(issue, nil)
	if err != nil {
		t.Fatal(err)
	}
	var presented []*big.Int // by every handshake of node-a, in order
	certFunc := func() (*tls.Certificate, error) {
		crt, err := renewing.Certificate()
		if err == nil {
			mu.Lock()
			presented = append(presented, crt.Leaf.SerialNumber)
			mu.Unlock()
		}
		return crt, err
	}
	handshakes := func() int { mu.Lock(); defer mu.Unlock(); return len(presented) }
	echo := echoServer(t)
	a := c.nodeWith(t, Config{Name: "node-a", Certificate: certFunc}, true)
	c.node(t, "node-b", c.ca, locals{"home": &fakeTunnel{addr: echo, done: make(chan struct{})}}, true)
	c.node(t, "node-c", c.ca, locals{"home": &fakeTunnel{addr: echo, done: make(chan struct{})}}, true)

	toB := a.Relay("node-b")
	roundTrip(t, toB)
	first := issued[0]
	if handshakes() != 1 || presented[0].Cmp(first.SerialNumber) != 0 {
		t.Fatalf("the link to node-b presented %v, want the first certificate %v", presented, first.SerialNumber)
	}

	time.Sleep(time.Until(first.NotBefore.Add(time.Duration(float64(life)*RenewAfter) + 100*time.Millisecond)))
	roundTrip(t, a.Relay("node-c"))
	mu.Lock()
	if len(issued) != 2 || len(presented) != 2 || presented[1].Cmp(issued[1].SerialNumber) != 0 {
		t.Fatalf("after renewal: issued %d, presented %v", len(issued), presented)
	}
	second := issued[1]
	mu.Unlock()
	if !second.NotAfter.After(first.NotAfter) {
		t.Fatalf("renewed certificate ends %v, the first %v", second.NotAfter, first.NotAfter)
	}
	addrA, _ := c.peers.Peer("node-a")
	if got := serverSerial(t, addrA, "node-a", nodeCert(t, c.ca, "node-b").TLS(), c.ca.Pool()); got.Cmp(second.SerialNumber) != 0 {
		t.Fatalf("node-a serves certificate %v, want the renewed %v", got, second.SerialNumber)
	}

	// The session to node-b opened with the first certificate carries
	// streams after that certificate expired, without a new handshake.
	time.Sleep(time.Until(first.NotAfter.Add(200 * time.Millisecond)))
	before := handshakes()
	roundTrip(t, toB)
	if handshakes() != before {
		t.Fatal("the stream to node-b took a new link session")
	}
	if s := a.Stats().Sessions; s != 2 {
		t.Fatalf("node-a has %d link sessions, want 2 (node-b, node-c)", s)
	}
	if leaf, err := a.Certificate(); err != nil || leaf.SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Fatalf("node-a's current certificate: %v, %v; want the renewed one", leaf, err)
	}
}

// A renewal that fails keeps the certificate in use.
func TestRenewingKeepsCertificateWhenIssueFails(t *testing.T) {
	ca := testcert.MustCA(t, testcert.Options{DNSNames: []string{"cluster ca"}})
	fail := false
	r, err := NewRenewing(func() (tls.Certificate, error) {
		if fail {
			return tls.Certificate{}, os.ErrDeadlineExceeded
		}
		return ca.MustIssue(t, testcert.Options{DNSNames: []string{"node-a"}}).TLS(), nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := r.Certificate()
	fail = true
	r.now = func() time.Time { return first.Leaf.NotAfter.Add(-time.Minute) }
	got, err := r.Certificate()
	if err != nil || got != first {
		t.Fatalf("failed renewal gave %v, %v; want the current certificate", got, err)
	}
	if !r.renewAt.After(r.now()) || r.renewAt.After(first.Leaf.NotAfter) {
		t.Fatalf("retry at %v, want before the expiry %v", r.renewAt, first.Leaf.NotAfter)
	}
}

// An operator's rotation of the certificate files serves the next session
// without a restart; a half-written pair keeps the current certificate.
func TestFileCertificateRotation(t *testing.T) {
	c := newCluster(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key")
	stamp := time.Now()
	write := func(crt *testcert.Cert) {
		crt.MustWrite(t, certFile, keyFile)
		// Coarse file systems may keep the modification time.
		stamp = stamp.Add(time.Second)
		for _, f := range []string{certFile, keyFile} {
			if err := os.Chtimes(f, stamp, stamp); err != nil {
				t.Fatal(err)
			}
		}
	}
	one := nodeCert(t, c.ca, "node-a")
	write(one)
	fc, err := NewFileCert(certFile, keyFile, time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.nodeWith(t, Config{Name: "node-a", Certificate: fc.Certificate}, true)
	addrA, _ := c.peers.Peer("node-a")
	c.peers.set("node-b", "127.0.0.1:1")
	client := nodeCert(t, c.ca, "node-b").TLS()
	serial := func() *big.Int { return serverSerial(t, addrA, "node-a", client, c.ca.Pool()) }
	if got := serial(); got.Cmp(one.Leaf.SerialNumber) != 0 {
		t.Fatalf("serves %v, want %v", got, one.Leaf.SerialNumber)
	}

	two := nodeCert(t, c.ca, "node-a")
	write(two)
	testtools.Eventually(t, 5*time.Second, "node-a serves the rotated certificate",
		func() bool { return serial().Cmp(two.Leaf.SerialNumber) == 0 })

	// The next certificate's file is written, not yet its key.
	three := nodeCert(t, c.ca, "node-a")
	if err := os.WriteFile(certFile, three.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(certFile, stamp.Add(time.Second), stamp.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if got := serial(); got.Cmp(two.Leaf.SerialNumber) != 0 {
		t.Fatalf("with a half-written pair node-a serves %v, want the current %v", got, two.Leaf.SerialNumber)
	}
}
