package gatehouseapp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddypki"

	"github.com/gatehouse-project/gatehouse/modules/cluster/link"
	"github.com/gatehouse-project/gatehouse/modules/node"
)

// ClusterConfig makes this node one of several sharing the PostgreSQL
// storage: each reaches the gateways every other node holds, through an
// authenticated node-to-node link (see docs/cluster.md). Every string
// field takes placeholders such as {env.NODE_NAME}.
type ClusterConfig struct {
	// Name is this node's name in the cluster and in its link
	// certificate; a DNS name ("node-1" or "ns1.box.example.org").
	Name string `json:"name"`
	// PublicAddresses are the IP addresses clients reach this node on.
	PublicAddresses []string `json:"public_addresses,omitempty"`
	// Listen is the link's network address (Caddy's syntax, one port),
	// e.g. ":7443" or "tcp/10.0.0.1:7443".
	Listen string `json:"listen"`
	// Advertise is the host:port other nodes dial; default: Listen's,
	// which then needs a host.
	Advertise string `json:"advertise,omitempty"`
	// Lease is how long the node stays a member after its last
	// heartbeat (default 6s).
	Lease caddy.Duration `json:"lease,omitempty"`
	// CertFile and KeyFile are the node's link certificate (for Name,
	// server and client authentication) and key; CAFile the cluster CA
	// that issued every node's. Or, instead of the three:
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
	CAFile   string `json:"ca_file,omitempty"`
	// PKICA issues the node's certificate from the intermediate of this
	// CA of Caddy's pki app, which every node must share (the same root
	// and intermediate, or a shared storage); its root is the cluster CA.
	PKICA string `json:"pki_ca,omitempty"`
}

// provision resolves placeholders and checks the section, without side
// effects outside this process: the node joins in Start.
func (c *ClusterConfig) provision(ctx caddy.Context, repl *caddy.Replacer, dsn string, logger *slog.Logger) (*node.ClusterConfig, error) {
	if dsn == "" {
		return nil, errors.New("gatehouse cluster: needs the postgres storage, which every node shares")
	}
	r := func(s string) string { return repl.ReplaceKnown(s, "") }
	cc := &node.ClusterConfig{}
	cc.Name = strings.ToLower(r(c.Name))
	if cc.Name == "" {
		return nil, errors.New("gatehouse cluster: name is required")
	}
	for _, s := range c.PublicAddresses {
		a, err := netip.ParseAddr(r(s))
		if err != nil {
			return nil, fmt.Errorf("gatehouse cluster: public address: %w", err)
		}
		cc.PublicAddrs = append(cc.PublicAddrs, a.Unmap())
	}
	na, err := caddy.ParseNetworkAddress(r(c.Listen))
	if err != nil {
		return nil, fmt.Errorf("gatehouse cluster: listen: %w", err)
	}
	if na.PortRangeSize() != 1 || na.IsUnixNetwork() {
		return nil, fmt.Errorf("gatehouse cluster: listen %q: want one TCP port", c.Listen)
	}
	cc.LinkAddr = r(c.Advertise)
	if cc.LinkAddr == "" {
		if na.Host == "" {
			return nil, errors.New("gatehouse cluster: advertise is required when listen has no host")
		}
		cc.LinkAddr = net.JoinHostPort(na.Host, fmt.Sprint(na.StartPort))
	}
	if _, _, err := net.SplitHostPort(cc.LinkAddr); err != nil {
		return nil, fmt.Errorf("gatehouse cluster: advertise: %w", err)
	}
	if c.Lease < 0 {
		return nil, errors.New("gatehouse cluster: lease must not be negative")
	}
	cc.Lease = time.Duration(c.Lease)
	cc.DSN = dsn
	files := c.CertFile != "" || c.KeyFile != "" || c.CAFile != ""
	switch {
	case files && c.PKICA != "":
		return nil, errors.New("gatehouse cluster: give either cert_file, key_file and ca_file, or pki_ca")
	case files:
		if c.CertFile == "" || c.KeyFile == "" || c.CAFile == "" {
			return nil, errors.New("gatehouse cluster: cert_file, key_file and ca_file go together")
		}
		// Read again when the files change: an operator rotates them
		// without a restart.
		fc, err := link.NewFileCert(r(c.CertFile), r(c.KeyFile), certFileCheck, logger)
		if err != nil {
			return nil, fmt.Errorf("gatehouse cluster: link certificate: %w", err)
		}
		cc.Certificate = fc.Certificate
		pem, err := os.ReadFile(r(c.CAFile))
		if err != nil {
			return nil, fmt.Errorf("gatehouse cluster: cluster CA: %w", err)
		}
		cc.CA = x509.NewCertPool()
		if !cc.CA.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("gatehouse cluster: cluster CA %s: no PEM certificate", c.CAFile)
		}
	case c.PKICA != "":
		ca, err := pkiCA(ctx, r(c.PKICA))
		if err != nil {
			return nil, err
		}
		// Issued anew at two thirds of its life (and by every
		// configuration load), from the intermediate the pki app keeps
		// renewed.
		name := cc.Name
		renewing, err := link.NewRenewing(func() (tls.Certificate, error) { return issueFromCA(ca, name) }, logger)
		if err != nil {
			return nil, fmt.Errorf("gatehouse cluster: pki_ca %s: %w", c.PKICA, err)
		}
		cc.Certificate = renewing.Certificate
		cc.CA = x509.NewCertPool()
		cc.CA.AddCert(ca.RootCertificate())
	default:
		return nil, errors.New("gatehouse cluster: a link certificate is required: cert_file, key_file and ca_file, or pki_ca")
	}
	cc.Listen = func() (net.Listener, error) {
		ln, err := na.Listen(ctx, 0, net.ListenConfig{})
		if err != nil {
			return nil, err
		}
		tl, ok := ln.(net.Listener)
		if !ok {
			return nil, fmt.Errorf("listen %s: not a stream listener", c.Listen)
		}
		return tl, nil
	}
	return cc, nil
}

// certFileCheck is how often a link handshake looks whether the
// certificate files changed.
const certFileCheck = 30 * time.Second

// pkiCA is the CA id of Caddy's pki app, with an intermediate.
func pkiCA(ctx caddy.Context, id string) (*caddypki.CA, error) {
	appIface, err := ctx.App("pki")
	if err != nil {
		return nil, fmt.Errorf("gatehouse cluster: pki_ca %s: %w", id, err)
	}
	ca, err := appIface.(*caddypki.PKI).GetCA(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("gatehouse cluster: pki_ca %s: %w", id, err)
	}
	if len(ca.IntermediateCertificateChain()) == 0 || ca.IntermediateKey() == nil || ca.RootCertificate() == nil {
		return nil, fmt.Errorf("gatehouse cluster: pki_ca %s: the CA has no intermediate", id)
	}
	return ca, nil
}

// issueFromCA issues the node's link certificate from the intermediate
// of Caddy's pki CA, as Caddy's internal issuer does for sites: valid
// until the intermediate expires (at most a week), for name, for server
// and client authentication. The cluster CA is that CA's root.
func issueFromCA(ca *caddypki.CA, name string) (tls.Certificate, error) {
	fail := func(err error) (tls.Certificate, error) { return tls.Certificate{}, err }
	chain, signer := ca.IntermediateCertificateChain(), ca.IntermediateKey()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fail(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return fail(err)
	}
	now := time.Now()
	notAfter := now.Add(7 * 24 * time.Hour)
	if chain[0].NotAfter.Before(notAfter) {
		notAfter = chain[0].NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, chain[0], key.Public(), crypto.Signer(signer))
	if err != nil {
		return fail(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, nil
}

// unmarshalCaddyfile reads the `cluster { … }` block.
func (c *ClusterConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch key := d.Val(); key {
		case "name", "listen", "advertise", "ca", "pki":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			*map[string]*string{"name": &c.Name, "listen": &c.Listen, "advertise": &c.Advertise,
				"ca": &c.CAFile, "pki": &c.PKICA}[key] = v
		case "public_addresses":
			c.PublicAddresses = append(c.PublicAddresses, d.RemainingArgs()...)
			if len(c.PublicAddresses) == 0 {
				return d.ArgErr()
			}
		case "certificate":
			if !d.AllArgs(&c.CertFile, &c.KeyFile) {
				return d.ArgErr()
			}
		case "lease":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			c.Lease = dur
		default:
			return d.Errf("unrecognized cluster option %q", key)
		}
	}
	return nil
}
