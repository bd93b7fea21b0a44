// Package certs obtains and renews the gateway's certificates with
// CertMagic: ACME DNS-01 through the cloud's records API
// (modules/dnsprovider, authenticated with the name's token), storage in the
// state directory, renewal in the background. Its GetCertificate serves the
// newest certificate of a name, so a renewal takes effect without a restart.
//
// Several names can be managed at once (the current name and the one the
// owner just chose); each uses its own token for its challenges. The owner's
// own domains (home.example.com) are managed with ManageDelegated: their
// challenge record is set at the gateway's own _acme-challenge.NAME.ZONE,
// where _acme-challenge.home.example.com's CNAME points (solver.go). The
// package does not register names nor decide which name is current.
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/libdns/libdns"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/logging"
	"github.com/gatehouse-project/gatehouse/modules/dnsprovider"
)

// Config configures a Manager.
type Config struct {
	// StateDir holds the certificates and the ACME account, under
	// certmagic/.
	StateDir string
	// Directory is the ACME directory URL.
	Directory string
	// Roots verify the ACME directory's HTTPS certificate; nil means the
	// system roots.
	Roots *x509.CertPool
	// Email is the ACME account contact (may be empty).
	Email string
	// Resolvers are the DNS servers (host:port) asked whether a challenge
	// record is visible; empty means the zone's authoritative servers.
	Resolvers []string
	// Endpoint is the cloud's API, for the challenge records.
	Endpoint string
	// HTTPClient calls the cloud's API.
	HTTPClient *http.Client
	// Wildcard also obtains *.NAME.ZONE.
	Wildcard bool
	// RenewCheckInterval is how often certificates are checked for
	// renewal; 0 means CertMagic's default (10 minutes).
	RenewCheckInterval time.Duration
	// PropagationTimeout bounds the wait for a challenge record to be
	// visible; 0 means 2 minutes, -1 skips the check.
	PropagationTimeout time.Duration
	// OnChange is called (in its own goroutine) after a certificate was
	// obtained or renewed, or an attempt failed.
	OnChange func(fqdn string)
	Logger   *slog.Logger
}

// Status is what is known of one name's certificate.
type Status struct {
	// Ready: a certificate for the name is loaded and not expired.
	Ready     bool
	NotBefore time.Time
	NotAfter  time.Time
	Issuer    string
	// Obtaining: an attempt is under way and none has succeeded yet.
	Obtaining bool
	// LastError is why the last attempt failed, cleared by a success.
	LastError string
	// Obtained is when a certificate was last obtained or renewed.
	Obtained time.Time
}

type nameState struct {
	token string
	// via is set for a custom domain: its challenges are answered at
	// _acme-challenge.VIA (VIA is the gateway's NAME.ZONE).
	via       string
	obtaining bool
	lastErr   string
	obtained  time.Time
}

// Manager manages the certificates of the gateway's names.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	cache  *certmagic.Cache
	magic  *certmagic.Config
	issuer *certmagic.ACMEIssuer

	mu       sync.Mutex
	names    map[string]*nameState // by fqdn, lower case
	fallback string                // the name served when a client sends no SNI
	wg       sync.WaitGroup
	stopped  bool
	stop     chan struct{} // closed by Stop
}

// New prepares a Manager; nothing is obtained before Manage.
func New(cfg Config) (*Manager, error) {
	if cfg.StateDir == "" || cfg.Directory == "" || cfg.Endpoint == "" {
		return nil, errors.New("certs: state directory, ACME directory and cloud endpoint are required")
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, names: map[string]*nameState{}, stop: make(chan struct{})}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	zl := logging.Zap(m.log.With("component", "certmagic"))
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return m.magic, nil },
		RenewCheckInterval: cfg.RenewCheckInterval,
		// OCSP is not checked more often than needed: public CAs are
		// dropping it, and test CAs do not have it.
		OCSPCheckInterval: 24 * time.Hour,
		Logger:            zl,
	})
	m.magic = certmagic.New(m.cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: filepath.Join(cfg.StateDir, "certmagic")},
		OnEvent: m.onEvent,
		// No OCSP stapling: Let's Encrypt ended OCSP, and a missing
		// responder must not hold a certificate back.
		OCSP:   certmagic.OCSPConfig{DisableStapling: true},
		Logger: zl,
	})
	m.issuer = certmagic.NewACMEIssuer(m.magic, certmagic.ACMEIssuer{
		CA:                      cfg.Directory,
		Email:                   cfg.Email,
		Agreed:                  true,
		TrustedRoots:            cfg.Roots,
		DisableHTTPChallenge:    true,
		DisableTLSALPNChallenge: true,
		DNS01Solver:             newSolver(m, zl),
		Logger:                  zl,
	})
	m.magic.Issuers = []certmagic.Issuer{m.issuer}
	return m, nil
}

// StorageDir is where CertMagic keeps the certificates (an upstream in
// passthrough mode can read NAME.ZONE.crt and .key below it).
func (m *Manager) StorageDir() string { return filepath.Join(m.cfg.StateDir, "certmagic") }

func (m *Manager) subjects(fqdn string) []string {
	if m.cfg.Wildcard {
		return []string{fqdn, "*." + fqdn}
	}
	return []string{fqdn}
}

// Manage starts managing fqdn's certificates, with token for its
// challenges: loaded from storage when there, else obtained in the
// background (CertMagic retries with backoff), then renewed. ctx bounds the
// background work.
func (m *Manager) Manage(ctx context.Context, fqdn, token string) error {
	fqdn = strings.ToLower(strings.TrimSuffix(fqdn, "."))
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return errors.New("certs: manager stopped")
	}
	ns := m.names[fqdn]
	if ns == nil {
		ns = &nameState{}
		m.names[fqdn] = ns
	}
	ns.token = token
	if m.fallback == "" {
		m.fallback = fqdn
	}
	ns.via = ""
	m.mu.Unlock()
	if err := m.magic.ManageAsync(ctx, []string{fqdn}); err != nil {
		return fmt.Errorf("managing %s: %w", fqdn, err)
	}
	if m.cfg.Wildcard {
		// The wildcard waits for the name's own certificate: two first
		// obtains at once race in CertMagic's creation of an ACME
		// account without email (the second registers "mailto:default",
		// which CAs refuse). Once one certificate is there, the account
		// is too.
		m.wg.Go(func() {
			if !m.waitReady(ctx, fqdn) {
				return
			}
			m.mu.Lock()
			_, still := m.names[fqdn]
			m.mu.Unlock()
			if !still {
				return
			}
			if err := m.magic.ManageAsync(ctx, []string{"*." + fqdn}); err != nil {
				m.log.Warn("managing the wildcard certificate", "name", "*."+fqdn, "error", err)
			}
		})
	}
	return nil
}

// ManageDelegated starts managing the certificate of the owner's own
// domain (no wildcard), its DNS-01 challenges answered at
// _acme-challenge.VIA with via's token: the CA follows the CNAME at
// _acme-challenge.DOMAIN there. via is the gateway's NAME.ZONE, managed
// with Manage; the domain's first obtain waits for via's certificate (as
// the wildcard does, so that two first obtains do not race to create the
// ACME account). Managing a domain again with another via (after a
// rename) moves its challenges there.
func (m *Manager) ManageDelegated(ctx context.Context, domain, via, token string) error {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	via = strings.ToLower(strings.TrimSuffix(via, "."))
	if domain == via || via == "" {
		return fmt.Errorf("certs: %s cannot be delegated to %q", domain, via)
	}
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return errors.New("certs: manager stopped")
	}
	ns := m.names[domain]
	if ns == nil {
		ns = &nameState{}
		m.names[domain] = ns
	}
	ns.token, ns.via = token, via
	m.mu.Unlock()
	if m.Status(via).Ready {
		if err := m.magic.ManageAsync(ctx, []string{domain}); err != nil {
			return fmt.Errorf("managing %s: %w", domain, err)
		}
		return nil
	}
	// As the wildcard: the first obtain waits for the gateway name's
	// certificate, and with it for the ACME account.
	m.wg.Go(func() {
		if !m.waitReady(ctx, via) {
			return
		}
		m.mu.Lock()
		still := m.names[domain] == ns
		m.mu.Unlock()
		if !still {
			return
		}
		if err := m.magic.ManageAsync(ctx, []string{domain}); err != nil {
			m.log.Warn("managing a custom domain's certificate", "name", domain, "error", err)
		}
	})
	return nil
}

// waitReady waits until fqdn's certificate is there; false when ctx ended
// or the manager stopped first.
func (m *Manager) waitReady(ctx context.Context, fqdn string) bool {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for !m.Status(fqdn).Ready {
		select {
		case <-ctx.Done():
			return false
		case <-m.stop:
			return false
		case <-t.C:
		}
	}
	return true
}

// DelegationOf is the name whose _acme-challenge record answers domain's
// challenges, "" when domain answers its own or is not managed.
func (m *Manager) DelegationOf(domain string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ns := m.names[strings.ToLower(domain)]; ns != nil {
		return ns.via
	}
	return ""
}

// Unmanage stops renewing fqdn (a name given up, or a custom domain no
// longer claimed) and drops its certificates from memory; storage keeps
// them until they expire.
func (m *Manager) Unmanage(fqdn string) {
	fqdn = strings.ToLower(fqdn)
	subjects := m.subjects(fqdn)
	if m.DelegationOf(fqdn) != "" {
		subjects = []string{fqdn}
	}
	var subs []certmagic.SubjectIssuer
	for _, s := range subjects {
		subs = append(subs, certmagic.SubjectIssuer{Subject: s})
	}
	m.cache.RemoveManaged(subs)
	m.mu.Lock()
	delete(m.names, fqdn)
	if m.fallback == fqdn {
		m.fallback = ""
	}
	m.mu.Unlock()
}

// SetFallback names the certificate served to clients that send no server
// name (a LAN browser that opened https://192.168.1.10:8443/).
func (m *Manager) SetFallback(fqdn string) {
	m.mu.Lock()
	m.fallback = strings.ToLower(fqdn)
	m.mu.Unlock()
}

// GetCertificate is the tls.Config callback: the cached certificate for
// the client's server name, which CertMagic replaces in the cache when it
// renews.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if hello.ServerName == "" {
		m.mu.Lock()
		fb := m.fallback
		m.mu.Unlock()
		if fb != "" {
			h := *hello
			h.ServerName = fb
			hello = &h
		}
	}
	return m.magic.GetCertificate(hello)
}

// Status reports on fqdn's certificate.
func (m *Manager) Status(fqdn string) Status {
	fqdn = strings.ToLower(fqdn)
	var st Status
	now := time.Now()
	for _, c := range m.cache.AllMatchingCertificates(fqdn) {
		if c.Leaf == nil || now.After(c.Leaf.NotAfter) {
			continue
		}
		if c.Leaf.NotAfter.After(st.NotAfter) {
			st.Ready = true
			st.NotBefore, st.NotAfter = c.Leaf.NotBefore, c.Leaf.NotAfter
			st.Issuer = c.Leaf.Issuer.CommonName
		}
	}
	m.mu.Lock()
	if ns := m.names[fqdn]; ns != nil {
		st.Obtaining = ns.obtaining && !st.Ready
		st.LastError = ns.lastErr
		st.Obtained = ns.obtained
	}
	m.mu.Unlock()
	return st
}

// Stop ends the background renewals.
func (m *Manager) Stop() {
	m.mu.Lock()
	if !m.stopped {
		m.stopped = true
		close(m.stop)
	}
	m.mu.Unlock()
	m.cache.Stop()
	m.wg.Wait()
}

// baseName maps a certificate identifier (NAME.ZONE or *.NAME.ZONE) to the
// managed name.
func baseName(id string) string {
	return strings.ToLower(strings.TrimPrefix(id, "*."))
}

func (m *Manager) onEvent(_ context.Context, event string, data map[string]any) error {
	id, _ := data["identifier"].(string)
	if id == "" {
		return nil
	}
	name := baseName(id)
	m.mu.Lock()
	ns := m.names[name]
	if ns == nil {
		m.mu.Unlock()
		return nil
	}
	switch event {
	case "cert_obtaining":
		ns.obtaining = true
	case "cert_obtained":
		ns.obtaining = false
		ns.lastErr = ""
		ns.obtained = time.Now()
		m.log.Info("certificate obtained", "identifier", id, "renewal", data["renewal"])
	case "cert_failed":
		ns.obtaining = false
		if err, ok := data["error"].(error); ok {
			ns.lastErr = err.Error()
		} else {
			ns.lastErr = "certificate request failed"
		}
		m.log.Warn("certificate request failed", "identifier", id, "error", ns.lastErr)
	default:
		m.mu.Unlock()
		return nil
	}
	stopped := m.stopped
	if !stopped && m.cfg.OnChange != nil {
		m.wg.Add(1)
	}
	m.mu.Unlock()
	if !stopped && m.cfg.OnChange != nil {
		// CertMagic caches the new certificate after this event; the
		// callback runs apart so it sees it and so a slow callback does
		// not hold CertMagic up.
		go func() {
			defer m.wg.Done()
			m.cfg.OnChange(name)
		}()
	}
	return nil
}

// recordsProvider is the libdns provider CertMagic's DNS-01 solver uses: it
// sends each record through the cloud's API with the token of the managed
// name the record belongs to.
type recordsProvider struct{ m *Manager }

func (p recordsProvider) provider(zone string, rec libdns.Record) (*dnsprovider.Provider, error) {
	abs := strings.ToLower(strings.TrimSuffix(libdns.AbsoluteName(rec.RR().Name, zone), "."))
	name := strings.TrimPrefix(abs, "_acme-challenge.")
	p.m.mu.Lock()
	token := ""
	if ns := p.m.names[name]; ns != nil && ns.via == "" {
		token = ns.token
	} else {
		// The gateway's own name is no longer managed (renamed away
		// while a custom domain's challenge was under way): the token
		// the custom domain was managed with is that name's.
		for _, d := range p.m.names {
			if d.via == name && d.token != "" {
				token = d.token
				break
			}
		}
	}
	p.m.mu.Unlock()
	if token == "" {
		return nil, fmt.Errorf("certs: no token for the record %s", abs)
	}
	return &dnsprovider.Provider{Endpoint: p.m.cfg.Endpoint, Token: token, HTTPClient: p.m.cfg.HTTPClient}, nil
}

func (p recordsProvider) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	var out []libdns.Record
	for _, r := range recs {
		dp, err := p.provider(zone, r)
		if err != nil {
			return out, err
		}
		added, err := dp.AppendRecords(ctx, zone, []libdns.Record{r})
		if err != nil {
			return out, err
		}
		out = append(out, added...)
	}
	return out, nil
}

func (p recordsProvider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	var out []libdns.Record
	for _, r := range recs {
		dp, err := p.provider(zone, r)
		if err != nil {
			return out, err
		}
		deleted, err := dp.DeleteRecords(ctx, zone, []libdns.Record{r})
		if err != nil {
			return out, err
		}
		out = append(out, deleted...)
	}
	return out, nil
}

var _ certmagic.DNSProvider = recordsProvider{}
