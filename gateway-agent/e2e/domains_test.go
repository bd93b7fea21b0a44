package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/status"
	"github.com/gatehouse-project/gatehouse/internal/testenv"
	"github.com/gatehouse-project/gatehouse/internal/testtools"
)

// ownerDNS stands for the public DNS as a recursive resolver shows it: it
// is authoritative for the owner's zone example.com, whose CNAMEs the
// test sets, and asks the cloud's DNS for everything else (the gateway
// names and their _acme-challenge records). A CNAME is answered with the
// records of its target, as a recursive resolver does, so Pebble (which
// reads the TXT records of the first answer) follows it.
type ownerDNS struct {
	addr string

	mu     sync.Mutex
	cnames map[string]string // owner name → target, both absolute
	cloud  string            // the cloud's DNS, host:port
}

const ownerZone = "example.com."

// startOwnerDNS serves on one port over UDP (the cloud's check) and TCP
// (Pebble asks over TCP).
func startOwnerDNS(t *testing.T) *ownerDNS {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	o := &ownerDNS{addr: addr, cnames: map[string]string{}}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: dns.HandlerFunc(o.serve)}, {Listener: ln, Handler: dns.HandlerFunc(o.serve)}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return o
}

func (o *ownerDNS) setCloud(addr string) {
	o.mu.Lock()
	o.cloud = addr
	o.mu.Unlock()
}

func (o *ownerDNS) setCNAME(name, target string) {
	o.mu.Lock()
	o.cnames[dns.Fqdn(strings.ToLower(name))] = dns.Fqdn(target)
	o.mu.Unlock()
}

func (o *ownerDNS) removeCNAME(name string) {
	o.mu.Lock()
	delete(o.cnames, dns.Fqdn(strings.ToLower(name)))
	o.mu.Unlock()
}

// askCloud asks the cloud's DNS for name and type; nil on any failure.
func (o *ownerDNS) askCloud(name string, qtype uint16) *dns.Msg {
	o.mu.Lock()
	cloud := o.cloud
	o.mu.Unlock()
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(q, cloud)
	if err != nil {
		return nil
	}
	return r
}

func (o *ownerDNS) serve(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	if len(q.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	qn, qt := strings.ToLower(q.Question[0].Name), q.Question[0].Qtype
	if !dns.IsSubDomain(ownerZone, qn) {
		if r := o.askCloud(qn, qt); r != nil {
			m.Rcode, m.Answer, m.Ns = r.Rcode, r.Answer, r.Ns
		} else {
			m.Rcode = dns.RcodeServerFailure
		}
		_ = w.WriteMsg(m)
		return
	}
	o.mu.Lock()
	target, ok := o.cnames[qn]
	o.mu.Unlock()
	if !ok {
		m.Rcode = dns.RcodeNameError
		_ = w.WriteMsg(m)
		return
	}
	m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 1}, Target: target})
	if qt != dns.TypeCNAME {
		if r := o.askCloud(target, qt); r != nil {
			m.Answer = append(m.Answer, r.Answer...)
		}
	}
	_ = w.WriteMsg(m)
}

// domain is the owner's own domain in the custom domain tests.
const domain = "home.example.com"

// customDomainWorld starts the owner's DNS, the cloud (its CNAME check
// asking that DNS, claims rechecked every 2 s) and Pebble (asking that DNS
// too), with domain's CNAMEs pointing at the agent's provisional name.
func customDomainWorld(t *testing.T) (*testenv.Cloud, *testenv.Pebble, *ownerDNS) {
	t.Helper()
	owner := startOwnerDNS(t)
	c := testenv.StartCloud(t, testenv.CloudOptions{Tunnel: true, Gatehouse: fmt.Sprintf(`domain_resolvers %s
		domain_recheck_interval 2s`, owner.addr)})
	if !c.TunnelIngress {
		testtools.Missing(t, "the cloud's "+testenv.ListenerModule+" module", "build the cloud with ./xcaddy-build.sh, or point GATEHOUSE_CADDY at such a build")
	}
	owner.setCloud(fmt.Sprintf("127.0.0.1:%d", c.DNSPort))
	p := testenv.StartPebble(t, owner.addr, 24*time.Hour, false)
	fqdn := provisional + ".box.test"
	owner.setCNAME(domain, fqdn)
	owner.setCNAME("_acme-challenge."+domain, "_acme-challenge."+fqdn)
	return c, p, owner
}

// waitCustomDomain waits until the agent has claimed domain, has its
// certificate from Pebble, and its tunnel is up.
func waitCustomDomain(t *testing.T, a *agentRun) {
	t.Helper()
	var st status.Status
	testtools.Eventually(t, 120*time.Second, domain+" claimed with its certificate", func() bool {
		if a.Exited() {
			t.Fatalf("agent exited:\n%s", a.Output())
		}
		st = a.status(t)
		d := customDomain(st, domain)
		return st.Tunnel.Connected && d.State == status.DomainClaimed && d.Certificate.Ready
	})
	if d := customDomain(st, domain); !strings.Contains(d.Certificate.Issuer, "Pebble") {
		t.Fatalf("custom domain status: %+v", d)
	}
}

// pebbleRoots returns Pebble's issuing root, also written to a file.
func pebbleRoots(t *testing.T, p *testenv.Pebble) ([]byte, string) {
	t.Helper()
	roots := p.IssuedRoots(t)
	rootFile := filepath.Join(t.TempDir(), "pebble-root.pem")
	if err := os.WriteFile(rootFile, roots, 0o600); err != nil {
		t.Fatal(err)
	}
	return roots, rootFile
}

// curlCustom fetches https://DOMAIN:PORT/ from the cloud's public port
// (the connection goes down the tunnel of the gateway that claimed
// DOMAIN), verifying the certificate against rootFile for DOMAIN.
func curlCustom(t *testing.T, c *testenv.Cloud, rootFile, domain string) (string, error) {
	t.Helper()
	curl := testtools.Binary(t, "curl", "curl")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, curl, "-sS", "-v", "--max-time", "20", "--cacert", rootFile,
		"--resolve", fmt.Sprintf("%s:%d:127.0.0.1", domain, c.HTTPSPort),
		fmt.Sprintf("https://%s:%d/custom-domain", domain, c.HTTPSPort)).CombinedOutput()
	return string(out), err
}

func customDomain(st status.Status, domain string) status.CustomDomain {
	for _, d := range st.CustomDomains {
		if d.Domain == domain {
			return d
		}
	}
	return status.CustomDomain{}
}

// The owner's own domain in front of the gateway: with home.example.com
// a CNAME to NAME.ZONE and _acme-challenge.home.example.com one to
// _acme-challenge.NAME.ZONE (served by a DNS server of the test, which
// the cloud's CNAME check and Pebble both ask), the agent claims the
// domain, obtains its certificate from Pebble with the challenge set at
// its own _acme-challenge.NAME.ZONE, and curl reaches the gateway's app
// through the tunnel under home.example.com with that certificate. When
// the CNAME goes, the cloud's recheck drops the claim, the tunnel stops
// carrying the domain, and the agent waits for the records again.
func TestCustomDomain(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	c, p, owner := customDomainWorld(t)
	a := startAgent(t, c, p, filepath.Join(t.TempDir(), "state"), upstream(t), testenv.FreePort(t), testenv.FreePort(t),
		"-custom-domains", domain, "-custom-domains-check", "1s")
	waitCustomDomain(t, a)
	roots, rootFile := pebbleRoots(t, p)
	out, err := curlCustom(t, c, rootFile, domain)
	if err != nil || !strings.Contains(out, "hello from the gateway app") || !strings.Contains(out, "host="+domain) {
		t.Fatalf("curl %s through the tunnel: %v\n%s", domain, err, out)
	}
	// curl checked the name against the certificate; the issuer says
	// whose it is.
	if !strings.Contains(out, "issuer:") || !strings.Contains(out[strings.Index(out, "issuer:"):], "Pebble") {
		t.Fatalf("certificate not Pebble's:\n%s", out)
	}
	// The LAN port serves it by SNI too.
	body, cert := lanGet(t, roots, domain, a.https, "/lan")
	if !strings.Contains(body, "hello from the gateway app") || cert.VerifyHostname(domain) != nil {
		t.Fatalf("LAN port for %s: %s (certificate for %v)", domain, body, cert.DNSNames)
	}
	t.Logf("%s served through the tunnel with the agent's own certificate", domain)

	// The owner removes the CNAME: the cloud's recheck drops the claim,
	// and the domain no longer reaches the gateway.
	owner.removeCNAME(domain)
	testtools.Eventually(t, 30*time.Second, "the claim dropped and seen by the agent", func() bool {
		return customDomain(a.status(t), domain).State == status.DomainWaitingForCNAME
	})
	if out, err := curlCustom(t, c, rootFile, domain); err == nil || strings.Contains(out, "hello from the gateway app") {
		t.Fatalf("%s still reaches the gateway after the claim was dropped:\n%s", domain, out)
	}
	if d := customDomain(a.status(t), domain); !strings.Contains(d.Reason, domain+" has no CNAME") {
		t.Fatalf("reason: %+v", d)
	}
}

// In passthrough mode the agent obtains the custom domain's certificate
// and relays the connections; the app terminates TLS with the certificate
// it reads from the state directory, where the README says it is.
func TestCustomDomainPassthrough(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	c, p, _ := customDomainWorld(t)
	stateDir := filepath.Join(t.TempDir(), "state")
	app := tlsAppFromState(t, stateDir)
	a := startAgent(t, c, p, stateDir, app, testenv.FreePort(t), testenv.FreePort(t),
		"-passthrough", "-custom-domains", domain, "-custom-domains-check", "1s")
	waitCustomDomain(t, a)
	_, rootFile := pebbleRoots(t, p)
	out, err := curlCustom(t, c, rootFile, domain)
	if err != nil || !strings.Contains(out, "the app's own TLS for "+domain) {
		t.Fatalf("curl %s through the tunnel to the passthrough app: %v\n%s", domain, err, out)
	}
}

// tlsAppFromState is a web app that terminates TLS itself with the
// certificate the agent keeps for the SNI's name in stateDir, read at each
// handshake; it returns its host:port.
func tlsAppFromState(t *testing.T, stateDir string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	getCert := func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		base := filepath.Join(stateDir, "certmagic", "certificates", "*", hello.ServerName, hello.ServerName)
		crts, _ := filepath.Glob(base + ".crt")
		if len(crts) != 1 {
			return nil, fmt.Errorf("no certificate for %q in the state directory", hello.ServerName)
		}
		c, err := tls.LoadX509KeyPair(crts[0], strings.TrimSuffix(crts[0], ".crt")+".key")
		return &c, err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "the app's own TLS for %s\n", r.TLS.ServerName)
		}),
		TLSConfig:         &tls.Config{GetCertificate: getCert},
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}
