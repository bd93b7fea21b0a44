package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/idna"
)

// A custom domain is a name outside the zone, such as home.example.com,
// that a gateway holds: its owner points it at NAME.ZONE by CNAME, and
// _acme-challenge.DOMAIN at _acme-challenge.NAME.ZONE, so that the
// gateway obtains its certificate by DNS-01 with its own records and the
// cloud routes the name's TLS connections down the gateway's tunnel. The
// cloud holds no key of the domain's DNS.

// DomainClaim is one domain a gateway holds.
type DomainClaim struct {
	// Domain is lower-case ASCII (an internationalised name in its
	// xn-- form), without trailing dot.
	Domain  string
	Gateway string
	Created time.Time
	// Checked is when both CNAMEs were last seen in place.
	Checked time.Time
}

// Errors of the custom domains.
var (
	// ErrInvalidDomain: not a domain name, or one inside the zone.
	ErrInvalidDomain = errors.New("invalid domain")
	// ErrDomainTaken: another gateway holds the domain.
	ErrDomainTaken = errors.New("domain held by another gateway")
	// ErrNotDelegated: the domain's CNAMEs are missing or point elsewhere.
	ErrNotDelegated = errors.New("domain not delegated to the gateway")
	// ErrTooManyDomains: the gateway holds MaxDomainsPerGateway already.
	ErrTooManyDomains = errors.New("too many custom domains")
)

// MaxDomainsPerGateway bounds the custom domains one gateway holds. Each
// claim is a row, an entry of every node's in-memory index and two DNS
// queries at every recheck; without a bound, an owner of a zone could make
// the cloud hold and recheck any number of names for one gateway.
const MaxDomainsPerGateway = 32

// maxDomainLength is the longest name DNS carries, without trailing dot.
const maxDomainLength = 253

// NormalizeDomain returns domain as it is stored: lower-case ASCII,
// internationalised labels in their xn-- form, no trailing dot. Every
// label follows the rules of a gateway's name (LDH, valid IDNA, one
// script), so that an ACME CA issues for it; at least two labels.
func NormalizeDomain(domain string) (string, error) {
	d := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(domain), "."))
	if d == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidDomain)
	}
	a, err := idna.Registration.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("%w: %q is not a valid domain name: %v", ErrInvalidDomain, domain, err)
	}
	a = strings.ToLower(a)
	if len(a) > maxDomainLength {
		return "", fmt.Errorf("%w: longer than %d characters", ErrInvalidDomain, maxDomainLength)
	}
	labels := strings.Split(a, ".")
	if len(labels) < 2 {
		return "", fmt.Errorf("%w: %q has a single label", ErrInvalidDomain, domain)
	}
	for _, l := range labels {
		if len(l) > MaxNameLength || !isLabel(l) {
			return "", fmt.Errorf("%w: label %q: only a-z, 0-9 and inner hyphens, at most %d characters", ErrInvalidDomain, l, MaxNameLength)
		}
		if err := checkACMELabel(l); err != nil {
			return "", fmt.Errorf("%w: label %q: %v", ErrInvalidDomain, l, errors.Unwrap(err))
		}
	}
	return a, nil
}

// DelegationCheck verifies, through the public DNS, that domain has a
// CNAME to fqdn (NAME.ZONE) and _acme-challenge.domain one to
// _acme-challenge.fqdn. Its error says which record is missing or wrong.
type DelegationCheck func(ctx context.Context, domain, fqdn string) error

// DomainsConfig configures the custom domains.
type DomainsConfig struct {
	// Zone is the gateways' zone: no name inside it can be claimed.
	Zone string
	// Check verifies the CNAMEs of a claim, at the claim and at every
	// recheck. Required.
	Check DelegationCheck
	// RecheckInterval is how often every claim is checked again; a claim
	// whose CNAMEs are gone is dropped (default an hour).
	RecheckInterval time.Duration
	// OnDrop is told of every claim a recheck dropped, and why.
	OnDrop func(c DomainClaim, reason error)
}

// DefaultRecheckInterval is how often claims are checked by default: a
// claim that lost its CNAME is gone within the hour.
const DefaultRecheckInterval = time.Hour

// Domains holds the custom domains: the claims in the store, their
// rechecks, and an in-memory index from domain to gateway that the
// ingress consults for every TLS connection outside the zone. The index
// follows the registry's events, those of other nodes included.
type Domains struct {
	reg *Registry
	cfg DomainsConfig

	mu        sync.RWMutex
	byDomain  map[string]string
	byGateway map[string][]string

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// NewDomains returns the custom domains of reg; it observes reg's events
// from now on. Call Load (or Start) to fill the index from the store.
func NewDomains(reg *Registry, cfg DomainsConfig) *Domains {
	cfg.Zone = strings.ToLower(strings.TrimSuffix(cfg.Zone, "."))
	if cfg.RecheckInterval <= 0 {
		cfg.RecheckInterval = DefaultRecheckInterval
	}
	d := &Domains{reg: reg, cfg: cfg, byDomain: map[string]string{}, byGateway: map[string][]string{}, stop: make(chan struct{})}
	reg.Observe(d.apply)
	return d
}

// Claim gives domain to g once its CNAMEs check out now. A claim g
// already holds is checked and refreshed.
func (d *Domains) Claim(ctx context.Context, g *Gateway, domain string) (DomainClaim, error) {
	dom, err := NormalizeDomain(domain)
	if err != nil {
		return DomainClaim{}, err
	}
	if d.cfg.Zone != "" && (dom == d.cfg.Zone || strings.HasSuffix(dom, "."+d.cfg.Zone)) {
		return DomainClaim{}, fmt.Errorf("%w: %s is inside the zone %s, whose names are the gateways' own", ErrInvalidDomain, dom, d.cfg.Zone)
	}
	if holder, ok := d.Gateway(dom); ok && holder != g.Name {
		// Answered before the DNS is asked; the store decides for good.
		return DomainClaim{}, fmt.Errorf("%w: %s", ErrDomainTaken, dom)
	}
	held, err := d.reg.store.DomainClaims(ctx, g.Name)
	if err != nil {
		return DomainClaim{}, err
	}
	// Counted outside the store's transaction: concurrent claims of one
	// gateway may pass it together, by at most their number, which the
	// rate limit of the claims keeps small.
	if len(held) >= MaxDomainsPerGateway && !slices.ContainsFunc(held, func(c DomainClaim) bool { return c.Domain == dom }) {
		return DomainClaim{}, fmt.Errorf("%w: a gateway holds at most %d; release one first", ErrTooManyDomains, MaxDomainsPerGateway)
	}
	if d.cfg.Check == nil {
		return DomainClaim{}, fmt.Errorf("%w: this server checks no domains", ErrNotDelegated)
	}
	if err := d.cfg.Check(ctx, dom, g.Name+"."+d.cfg.Zone); err != nil {
		if errors.Is(err, ErrNotDelegated) {
			return DomainClaim{}, err
		}
		return DomainClaim{}, fmt.Errorf("%w: %v", ErrNotDelegated, err)
	}
	now := d.reg.now().UTC()
	c := DomainClaim{Domain: dom, Gateway: g.Name, Created: now, Checked: now}
	if err := d.reg.store.ClaimDomain(ctx, c); err != nil {
		return DomainClaim{}, err
	}
	claims, err := d.emit(ctx, g.Name)
	if err != nil {
		return DomainClaim{}, err
	}
	for _, have := range claims {
		if have.Domain == dom {
			// A claim held before keeps its creation time.
			return have, nil
		}
	}
	return c, nil
}

// List returns g's claims.
func (d *Domains) List(ctx context.Context, g *Gateway) ([]DomainClaim, error) {
	return d.reg.store.DomainClaims(ctx, g.Name)
}

// Release drops g's claim on domain, or ErrNotFound.
func (d *Domains) Release(ctx context.Context, g *Gateway, domain string) error {
	dom, err := NormalizeDomain(domain)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	if err := d.reg.store.ReleaseDomain(ctx, g.Name, dom); err != nil {
		return err
	}
	_, err = d.emit(ctx, g.Name)
	return err
}

// Gateway returns the gateway that holds host (a TLS server name), from
// the in-memory index.
func (d *Domains) Gateway(host string) (string, bool) {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	d.mu.RLock()
	defer d.mu.RUnlock()
	name, ok := d.byDomain[host]
	return name, ok
}

// Load replaces the index with the store's claims of live gateways.
func (d *Domains) Load(ctx context.Context) error {
	claims, err := d.reg.store.DomainClaims(ctx, "")
	if err != nil {
		return err
	}
	byGateway := map[string][]string{}
	for _, c := range claims {
		byGateway[c.Gateway] = append(byGateway[c.Gateway], c.Domain)
	}
	for name := range byGateway {
		g, err := d.reg.store.Gateway(ctx, name)
		switch {
		case errors.Is(err, ErrNotFound):
			// Removed meanwhile; its claims went with it.
			delete(byGateway, name)
		case err != nil:
			// The index stays as it was: a store that failed for a moment
			// must not take a gateway's domains off the air until the
			// next load, an hour later.
			return fmt.Errorf("loading the custom domains of %s: %w", name, err)
		case !routable(g):
			delete(byGateway, name)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.byGateway = byGateway
	d.byDomain = map[string]string{}
	for name, doms := range byGateway {
		for _, dom := range doms {
			d.byDomain[dom] = name
		}
	}
	return nil
}

// Recheck checks every claim again: a claim whose CNAMEs are gone, or
// whose gateway expired, is dropped (OnDrop is told). A check that fails
// for another reason (the resolvers time out) keeps the claim. Then the
// index is reloaded, which also catches up with missed changes.
func (d *Domains) Recheck(ctx context.Context) error {
	claims, err := d.reg.store.DomainClaims(ctx, "")
	if err != nil {
		return err
	}
	// Least recently checked first: a round cut short by its deadline
	// (resolvers timing out) leaves the freshest claims for the next
	// one, so that every claim is rechecked in turn.
	slices.SortStableFunc(claims, func(a, b DomainClaim) int { return a.Checked.Compare(b.Checked) })
	changed := map[string]bool{}
	for _, c := range claims {
		if ctx.Err() != nil {
			break
		}
		reason := d.recheckOne(ctx, c)
		if reason == nil {
			continue
		}
		if err := d.reg.store.ReleaseDomain(ctx, c.Gateway, c.Domain); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		changed[c.Gateway] = true
		if d.cfg.OnDrop != nil {
			d.cfg.OnDrop(c, reason)
		}
	}
	for name := range changed {
		if _, err := d.emit(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return d.Load(ctx)
}

// recheckOne returns why c must be dropped, or nil to keep it.
func (d *Domains) recheckOne(ctx context.Context, c DomainClaim) error {
	g, err := d.reg.store.Gateway(ctx, c.Gateway)
	if err != nil {
		// A removed gateway's claims cascade; nothing else to do here.
		return nil
	}
	if g.Expired {
		return errors.New("the gateway expired")
	}
	if d.cfg.Check == nil {
		return nil
	}
	cerr := d.cfg.Check(ctx, c.Domain, c.Gateway+"."+d.cfg.Zone)
	if cerr == nil {
		c.Checked = d.reg.now().UTC()
		_ = d.reg.store.ClaimDomain(ctx, c)
		return nil
	}
	if errors.Is(cerr, ErrNotDelegated) {
		return cerr
	}
	return nil
}

// Start loads the index and rechecks every RecheckInterval until Stop.
func (d *Domains) Start(ctx context.Context) error {
	if err := d.Load(ctx); err != nil {
		return err
	}
	d.wg.Go(func() {
		t := time.NewTicker(d.cfg.RecheckInterval)
		defer t.Stop()
		for {
			select {
			case <-d.stop:
				return
			case <-t.C:
				// A round may take as long as its interval, no longer.
				rctx, cancel := context.WithTimeout(context.Background(), d.cfg.RecheckInterval)
				_ = d.Recheck(rctx)
				cancel()
			}
		}
	})
	return nil
}

// Stop ends the rechecks and waits for a running one.
func (d *Domains) Stop() {
	d.stopOnce.Do(func() { close(d.stop) })
	d.wg.Wait()
}

// emit tells observers (this index; other nodes learn through the store)
// the gateway's claims as they now are, and returns them.
func (d *Domains) emit(ctx context.Context, name string) ([]DomainClaim, error) {
	g, err := d.reg.store.Gateway(ctx, name)
	if err != nil {
		return nil, err
	}
	claims, err := d.reg.store.DomainClaims(ctx, name)
	if err != nil {
		return nil, err
	}
	d.reg.emit(Event{Subtree: GatewaySubtree(name), Gateway: g, Domains: claimedDomains(claims), DomainsChanged: true})
	return claims, nil
}

// apply keeps the index in step with the registry's events: a gateway
// removed or expired loses its domains at once (the store's claims follow,
// by cascade or by the sweep), a change of claims replaces its set.
func (d *Domains) apply(ev Event) {
	name, ok := ev.Subtree.Gateway()
	if !ok {
		return
	}
	switch {
	case ev.Gateway == nil || !routable(ev.Gateway):
		d.set(name, nil)
	case ev.DomainsChanged:
		d.set(name, ev.Domains)
	}
}

// routable reports whether g's domains are routed: not expired, not
// disabled (a disabled gateway keeps its claims for when it is enabled).
func routable(g *Gateway) bool { return !g.Expired && !g.Disabled }

func (d *Domains) set(name string, domains []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, dom := range d.byGateway[name] {
		if d.byDomain[dom] == name {
			delete(d.byDomain, dom)
		}
	}
	if len(domains) == 0 {
		delete(d.byGateway, name)
		return
	}
	d.byGateway[name] = slices.Clone(domains)
	for _, dom := range domains {
		d.byDomain[dom] = name
	}
}

func claimedDomains(claims []DomainClaim) []string {
	out := make([]string, len(claims))
	for i, c := range claims {
		out[i] = c.Domain
	}
	return out
}
