// Package testcert makes the certificates tests and benchmarks use: a
// self-signed server certificate that is its own root, or a small CA that
// issues server certificates. Keys are ECDSA P-256.
//
// Each maker returns an error, for the bench programs; the Must… forms fail
// a testing.TB instead.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"testing"
	"time"
)

// Options describe a certificate. Zero fields take the defaults noted.
type Options struct {
	// Serial is the serial number; nil: a random 64-bit one.
	Serial *big.Int
	// Subject is the subject; its CommonName defaults to the first DNS
	// name.
	Subject pkix.Name
	// DNSNames and IPAddresses are the names it is valid for.
	DNSNames    []string
	IPAddresses []net.IP
	// NotBefore defaults to an hour ago, NotAfter to a day from now.
	NotBefore, NotAfter time.Time
	// ExtKeyUsage of an issued certificate; nil: server authentication.
	// Mutual TLS peers (the cluster link) need client and server.
	ExtKeyUsage []x509.ExtKeyUsage
}

// Cert is a certificate and its key.
type Cert struct {
	DER  []byte
	Key  *ecdsa.PrivateKey
	Leaf *x509.Certificate
}

// TLS is the certificate for a tls.Config.
func (c *Cert) TLS() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.DER}, PrivateKey: c.Key, Leaf: c.Leaf}
}

// Pool is a pool that trusts (only) this certificate.
func (c *Cert) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(c.Leaf)
	return pool
}

// CertPEM is the certificate in PEM.
func (c *Cert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.DER})
}

// KeyPEM is the key in PEM ("EC PRIVATE KEY").
func (c *Cert) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(c.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// WriteCert writes the certificate (PEM) to path.
func (c *Cert) WriteCert(path string) error {
	return os.WriteFile(path, c.CertPEM(), 0o600)
}

// WriteKey writes the key (PEM) to path.
func (c *Cert) WriteKey(path string) error {
	b, err := c.KeyPEM()
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// SelfSigned makes a server certificate that is its own root (a CA, so
// that it verifies as one), for o's names.
func SelfSigned(o Options) (*Cert, error) {
	return create(o, x509.KeyUsageDigitalSignature|x509.KeyUsageCertSign,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, true, nil)
}

// NewCA makes a root certificate that signs certificates (and CRLs) and
// serves no names of its own.
func NewCA(o Options) (*Cert, error) {
	return create(o, x509.KeyUsageCertSign|x509.KeyUsageCRLSign, nil, true, nil)
}

// Issue makes a server certificate for o's names, signed by ca.
func (ca *Cert) Issue(o Options) (*Cert, error) {
	ext := o.ExtKeyUsage
	if ext == nil {
		ext = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	return create(o, x509.KeyUsageDigitalSignature, ext, false, ca)
}

func create(o Options, usage x509.KeyUsage, ext []x509.ExtKeyUsage, isCA bool, parent *Cert) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial := o.Serial
	if serial == nil {
		if serial, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64)); err != nil {
			return nil, err
		}
	}
	subject := o.Subject
	if subject.CommonName == "" && len(o.DNSNames) > 0 {
		subject.CommonName = o.DNSNames[0]
	}
	now := time.Now()
	notBefore, notAfter := o.NotBefore, o.NotAfter
	if notBefore.IsZero() {
		notBefore = now.Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = now.Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		DNSNames:              o.DNSNames,
		IPAddresses:           o.IPAddresses,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              usage,
		ExtKeyUsage:           ext,
		BasicConstraintsValid: isCA,
		IsCA:                  isCA,
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.Leaf, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Cert{DER: der, Key: key, Leaf: leaf}, nil
}

// MustSelfSigned is SelfSigned, failing t on error.
func MustSelfSigned(t testing.TB, o Options) *Cert {
	t.Helper()
	c, err := SelfSigned(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// MustCA is NewCA, failing t on error.
func MustCA(t testing.TB, o Options) *Cert {
	t.Helper()
	c, err := NewCA(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// MustIssue is Issue, failing t on error.
func (ca *Cert) MustIssue(t testing.TB, o Options) *Cert {
	t.Helper()
	c, err := ca.Issue(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// MustWrite writes the certificate to certFile and, unless keyFile is
// empty, the key to keyFile, failing t on error.
func (c *Cert) MustWrite(t testing.TB, certFile, keyFile string) {
	t.Helper()
	if err := c.WriteCert(certFile); err != nil {
		t.Fatal(err)
	}
	if keyFile == "" {
		return
	}
	if err := c.WriteKey(keyFile); err != nil {
		t.Fatal(err)
	}
}

// PoolFromFiles reads the PEM certificates of files into a pool.
func PoolFromFiles(files ...string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("no certificate in %s", f)
		}
	}
	return pool, nil
}
