// Command legoacmedns is lego with its acme-dns provider alone, for the
// end-to-end tests: it obtains one certificate for the -d names from the
// ACME CA at -ca, solving DNS-01 through lego's own acmedns provider,
// configured as lego's CLI configures it (ACME_DNS_API_BASE and
// ACME_DNS_STORAGE_PATH, the account file), and checks propagation against
// the -dns server. It writes the certificate chain to -out.
//
// It stands in for `lego --dns acme-dns run`, which cannot be pinned as a
// Go tool here: lego's command imports every DNS provider, and one of
// their modules (github.com/ucloud/ucloud-sdk-go v0.22.141) is not served
// by the Go module proxy. The provider, the ACME client and the account
// file format are lego's own; only the command line is this file.
//
// Trust comes from the environment, as for lego: SSL_CERT_FILE names the
// roots of the CA's and the acme-dns API's HTTPS certificates.
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/challenge/dns01"
	"github.com/go-acme/lego/v5/lego"
	"github.com/go-acme/lego/v5/providers/dns/acmedns"
	"github.com/go-acme/lego/v5/registration"
)

type user struct {
	key crypto.Signer
	reg *acme.ExtendedAccount
}

func (u *user) GetEmail() string                       { return "" }
func (u *user) GetRegistration() *acme.ExtendedAccount { return u.reg }
func (u *user) GetPrivateKey() crypto.Signer           { return u.key }

type names []string

func (n *names) String() string     { return strings.Join(*n, ",") }
func (n *names) Set(s string) error { *n = append(*n, s); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "legoacmedns:", err)
		os.Exit(1)
	}
}

func run() error {
	var domains names
	ca := flag.String("ca", "", "ACME directory URL")
	dnsServer := flag.String("dns", "", "recursive DNS server for the propagation check (host:port)")
	out := flag.String("out", "", "where to write the certificate chain (PEM)")
	flag.Var(&domains, "d", "a name for the certificate (repeat)")
	flag.Parse()
	if *ca == "" || *out == "" || len(domains) == 0 {
		return fmt.Errorf("-ca, -out and -d are required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if *dnsServer != "" {
		opts := dns01.NewOptions()
		opts.RecursiveNameservers = []string{*dnsServer}
		opts.Timeout = 5 * time.Second
		dns01.SetDefaultClient(dns01.NewClient(opts))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	u := &user{key: key}
	cfg := lego.NewConfig(u)
	cfg.CADirURL = *ca
	client, err := lego.NewClient(cfg)
	if err != nil {
		return fmt.Errorf("acme client: %w", err)
	}
	provider, err := acmedns.NewDNSProvider()
	if err != nil {
		return err
	}
	// The cloud is the zone's only authoritative server, and it is the
	// -dns server: there is no other to ask.
	if err := client.Challenge.SetDNS01Provider(provider, dns01.DisableAuthoritativeNssPropagationRequirement()); err != nil {
		return err
	}
	if u.reg, err = client.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true}); err != nil {
		return fmt.Errorf("acme account: %w", err)
	}
	res, err := client.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: domains, Bundle: true, KeyType: certcrypto.EC256})
	if err != nil {
		return fmt.Errorf("obtain: %w", err)
	}
	return os.WriteFile(*out, res.Certificate, 0o600)
}
