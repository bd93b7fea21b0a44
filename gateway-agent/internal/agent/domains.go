package agent

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/cloudapi"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/config"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/state"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/status"
	"github.com/gatehouse-project/gatehouse/modules/apierror"
)

// The owner's own domains (custom_domains). For each, the agent claims it
// at the cloud, which grants the claim once home.example.com has a CNAME
// to NAME.ZONE and _acme-challenge.home.example.com one to
// _acme-challenge.NAME.ZONE; it then obtains the domain's certificate with
// the challenge at its own _acme-challenge.NAME.ZONE (certs.ManageDelegated)
// and the proxy serves it by SNI like NAME.ZONE's. It asks the cloud every
// custom_domains_check whether its claims still hold (the cloud drops one
// whose CNAME is gone) and releases the claims no longer configured.

// Claim retry delays: a missing CNAME is often being added right now, a
// refusal (another gateway holds the domain) changes rarely.
const (
	domainRetryFirst      = 10 * time.Second
	domainRetryMax        = 5 * time.Minute
	domainRefusedRetryMax = 30 * time.Minute
	// domainListRetry is the next check after a failed list.
	domainListRetry = time.Minute
)

// customDomain is the agent's view of one configured domain. Guarded by
// Agent.mu.
type customDomain struct {
	name   string
	state  string // a status.Domain* constant
	reason string
	// logged is the last reason logged: the log says each once.
	logged string
	next   time.Time
	delay  time.Duration
	// token is the registration's token the claim was made with, and
	// via its NAME.ZONE, where the certificate's challenges go; empty
	// while not claimed.
	token, via string
}

// domainRun is runDomains' state beside the domains.
type domainRun struct {
	nextCheck time.Time
}

// initDomains lists the configured domains, none claimed yet.
func (a *Agent) initDomains() {
	a.domains = nil
	for _, d := range a.set.CustomDomains {
		a.domains = append(a.domains, &customDomain{name: d, state: status.DomainClaiming})
	}
}

// runDomains claims, checks and releases the custom domains until ctx
// ends. With none configured it only releases, once, what an earlier
// configuration claimed (a cloud that answers, whatever it answers, ends
// it: one without custom domains has nothing to release).
func (a *Agent) runDomains(ctx context.Context) {
	var r domainRun
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		checked, err := a.domainsStep(ctx, &r)
		if len(a.set.CustomDomains) == 0 && checked && !errors.Is(err, cloudapi.ErrUnreachable) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// domainsStep does what is due now. It reports whether the claims were
// checked in this step, and how that went.
func (a *Agent) domainsStep(ctx context.Context, r *domainRun) (checked bool, checkErr error) {
	a.mu.Lock()
	cur := a.st.Current.Clone()
	a.mu.Unlock()
	if !cur.Valid() {
		return false, nil
	}
	now := a.now()
	if !now.Before(r.nextCheck) {
		checked = true
		if checkErr = a.checkDomains(ctx, cur); checkErr == nil {
			r.nextCheck = now.Add(time.Duration(a.cfg.CustomDomainsCheck))
		} else {
			r.nextCheck = now.Add(min(domainListRetry, time.Duration(a.cfg.CustomDomainsCheck)))
		}
	}
	a.mu.Lock()
	var due []*customDomain
	for _, d := range a.domains {
		if d.state != status.DomainClaimed && !now.Before(d.next) {
			due = append(due, d)
		}
		if d.state == status.DomainClaimed && d.token != cur.Token {
			// Renamed: the claim belongs to the old registration.
			// It is given up, and the domain claimed anew (its
			// CNAMEs must now name the new NAME.ZONE).
			due = append(due, d)
		}
	}
	a.mu.Unlock()
	for _, d := range due {
		a.claimDomain(ctx, cur, d)
	}
	return checked, checkErr
}

// checkDomains compares the cloud's list of claims with the agent's:
// claims the cloud dropped go back to claiming, claims it holds (after a
// restart) are taken up, claims no longer configured are released.
func (a *Agent) checkDomains(ctx context.Context, cur *state.Registration) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	held, err := a.api.Domains(cctx, cur.Token)
	cancel()
	if err != nil {
		if ctx.Err() == nil && len(a.set.CustomDomains) > 0 {
			a.log.Warn("listing the custom domains failed", "error", err)
		}
		return err
	}
	heldSet := map[string]bool{}
	for i := range held {
		held[i].Domain = strings.ToLower(held[i].Domain)
		heldSet[held[i].Domain] = true
	}
	for _, h := range held {
		if slices.Contains(a.set.CustomDomains, h.Domain) {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := a.api.ReleaseDomain(cctx, cur.Token, h.Domain)
		cancel()
		if err != nil {
			a.log.Warn("releasing a custom domain no longer configured failed: will retry", "domain", h.Domain, "error", err)
			return err
		}
		a.log.Info("released a custom domain no longer configured", "domain", h.Domain)
	}
	var manage, dropped []*customDomain
	now := a.now()
	a.mu.Lock()
	for _, d := range a.domains {
		switch {
		case d.state == status.DomainClaimed && d.token != cur.Token:
			// Claimed under the name renamed away from: the list is
			// the new name's; claimDomain moves the claim.
		case d.state == status.DomainClaimed && !heldSet[d.name]:
			d.state, d.reason, d.token, d.via = status.DomainClaiming, "the cloud dropped the claim", "", ""
			d.next, d.delay = now, 0
			dropped = append(dropped, d)
		case d.state != status.DomainClaimed && heldSet[d.name]:
			d.state, d.reason, d.token, d.via = status.DomainClaimed, "", cur.Token, cur.FQDN
			d.delay = 0
			manage = append(manage, d)
		}
	}
	a.mu.Unlock()
	for _, d := range dropped {
		a.log.Warn("the cloud dropped the claim of a custom domain (its CNAME records are gone?): claiming it again", "domain", d.name)
		a.certs.Unmanage(d.name)
	}
	for _, d := range manage {
		a.log.Info("custom domain claimed", "domain", d.name)
		a.manageDomainCertificate(d.name, cur)
	}
	return nil
}

// claimDomain asks the cloud for d, giving up first a claim made with an
// older registration's token.
func (a *Agent) claimDomain(ctx context.Context, cur *state.Registration, d *customDomain) {
	a.mu.Lock()
	old := ""
	if d.state == status.DomainClaimed && d.token != cur.Token {
		old = d.token
		d.state, d.token, d.via = status.DomainClaiming, "", ""
	}
	a.mu.Unlock()
	if old != "" {
		a.certs.Unmanage(d.name)
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := a.api.ReleaseDomain(cctx, old, d.name)
		cancel()
		if err != nil && !errors.Is(err, cloudapi.ErrTokenRefused) {
			a.log.Warn("releasing the claim of the name renamed away failed", "domain", d.name, "error", err)
		}
	}
	var err error
	if config.InZone(d.name, cur.Zone) {
		// The cloud refuses it too; the configuration could not tell
		// (a cloud URL without api.ZONE).
		err = &cloudapi.Error{Status: 400, Code: apierror.InvalidDomain, Reason: d.name + " is inside the zone " + cur.Zone}
	} else {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err = a.api.ClaimDomain(cctx, cur.Token, d.name)
		if errors.Is(err, cloudapi.ErrDomainTaken) && a.releaseFromRetired(cctx, d.name) {
			_, err = a.api.ClaimDomain(cctx, cur.Token, d.name)
		}
		cancel()
	}
	if ctx.Err() != nil {
		return
	}
	now := a.now()
	a.mu.Lock()
	if err == nil {
		d.state, d.reason, d.logged, d.token, d.via, d.delay = status.DomainClaimed, "", "", cur.Token, cur.FQDN, 0
		a.mu.Unlock()
		a.log.Info("custom domain claimed", "domain", d.name)
		a.manageDomainCertificate(d.name, cur)
		return
	}
	retryMax := domainRetryMax
	switch {
	case errors.Is(err, cloudapi.ErrDomainNotDelegated):
		d.state = status.DomainWaitingForCNAME
	case errors.Is(err, cloudapi.ErrDomainRefused), errors.Is(err, cloudapi.ErrDomainsUnsupported):
		d.state, retryMax = status.DomainRefused, domainRefusedRetryMax
	default:
		d.state = status.DomainClaiming
	}
	d.reason = cloudapi.Explain(err)
	d.delay = min(max(2*d.delay, domainRetryFirst), retryMax)
	d.next = now.Add(d.delay)
	log := d.reason != d.logged
	d.logged = d.reason
	a.mu.Unlock()
	if log {
		a.log.Warn("custom domain not claimed: will ask again", "domain", d.name, "state", d.state, "reason", d.reason)
	} else {
		a.log.Debug("custom domain still not claimed", "domain", d.name, "retry_in", d.delay)
	}
}

// releaseFromRetired gives domain up under the names this gateway renamed
// away from and still holds (an agent restarted after a rename no longer
// knows which one claimed it). It reports whether one did hold it.
func (a *Agent) releaseFromRetired(ctx context.Context, domain string) bool {
	a.mu.Lock()
	retired := slices.Clone(a.st.Retired)
	a.mu.Unlock()
	for _, r := range retired {
		list, err := a.api.Domains(ctx, r.Token)
		if err != nil || !slices.ContainsFunc(list, func(d cloudapi.Domain) bool { return strings.EqualFold(d.Domain, domain) }) {
			continue
		}
		if err := a.api.ReleaseDomain(ctx, r.Token, domain); err != nil {
			a.log.Warn("giving the custom domain up under the name renamed away from failed", "domain", domain, "name", r.Name, "error", err)
			return false
		}
		a.log.Info("gave the custom domain up under the name renamed away from", "domain", domain, "name", r.Name)
		return true
	}
	return false
}

// manageDomainCertificate has the claimed domain's certificate obtained
// (or loaded) and renewed, its challenges at cur's _acme-challenge.
func (a *Agent) manageDomainCertificate(domain string, cur *state.Registration) {
	a.mu.Lock()
	ctx := a.runCtx
	a.mu.Unlock()
	if err := a.certs.ManageDelegated(ctx, domain, cur.FQDN, cur.Token); err != nil && ctx.Err() == nil {
		a.log.Warn("managing the custom domain's certificate", "domain", domain, "error", err)
	}
}

// domainsStatus is the custom domains' part of the status. The caller
// holds no lock.
func (a *Agent) domainsStatus() ([]status.CustomDomain, []string) {
	a.mu.Lock()
	snap := make([]customDomain, 0, len(a.domains))
	for _, d := range a.domains {
		snap = append(snap, *d)
	}
	a.mu.Unlock()
	var out []status.CustomDomain
	var problems []string
	for _, d := range snap {
		sd := status.CustomDomain{Domain: d.name, State: d.state, Reason: d.reason, URL: status.PublicURL(d.name, a.cfg.PublicHTTPSPort())}
		if d.state != status.DomainClaimed {
			sd.NextAttempt = d.next.UTC()
		}
		if d.state == status.DomainClaimed {
			cs := a.certs.Status(d.name)
			sd.Certificate = status.Certificate{Ready: cs.Ready, NotAfter: cs.NotAfter, Issuer: cs.Issuer, Obtaining: cs.Obtaining, LastError: cs.LastError}
			if !cs.Ready && cs.LastError != "" {
				problems = append(problems, "the certificate for "+d.name+" cannot be obtained: "+cs.LastError)
			}
		}
		switch d.state {
		case status.DomainWaitingForCNAME:
			problems = append(problems, d.name+" is waiting for its CNAME records: "+d.reason)
		case status.DomainRefused:
			problems = append(problems, d.name+" is refused by the cloud: "+d.reason)
		}
		out = append(out, sd)
	}
	return out, problems
}
