// Package domaincheck verifies, through recursive resolvers, that a custom
// domain is delegated to a gateway: DOMAIN has a CNAME to NAME.ZONE and
// _acme-challenge.DOMAIN one to _acme-challenge.NAME.ZONE. It is the
// registry's DelegationCheck; the resolvers are configurable so that tests
// (and operators with their own resolver) choose whom to ask.
package domaincheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// DefaultTimeout bounds one query to one resolver.
const DefaultTimeout = 3 * time.Second

// Checker asks Resolvers, in order, until one answers.
type Checker struct {
	// Resolvers are IP:port addresses of recursive resolvers; a bare
	// address gets port 53. Empty: the system's /etc/resolv.conf.
	Resolvers []string
	// Timeout bounds one query (DefaultTimeout when 0).
	Timeout time.Duration
}

// New returns a Checker over resolvers, or those of /etc/resolv.conf
// when none is given.
func New(resolvers []string, timeout time.Duration) (*Checker, error) {
	c := &Checker{Timeout: timeout}
	for _, r := range resolvers {
		// An address, so that checking a domain never depends on
		// resolving the resolver's own name.
		ap, err := netip.ParseAddrPort(r)
		if err != nil {
			bare := r
			if strings.HasPrefix(r, "[") && strings.HasSuffix(r, "]") {
				bare = r[1 : len(r)-1]
			}
			a, aerr := netip.ParseAddr(bare)
			if aerr != nil {
				return nil, fmt.Errorf("domain resolver %q: want an IP address, with or without :port", r)
			}
			ap = netip.AddrPortFrom(a, 53)
		}
		c.Resolvers = append(c.Resolvers, ap.String())
	}
	if len(c.Resolvers) == 0 {
		conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("domain resolvers: none configured and /etc/resolv.conf unreadable: %w", err)
		}
		for _, s := range conf.Servers {
			c.Resolvers = append(c.Resolvers, net.JoinHostPort(s, conf.Port))
		}
		if len(c.Resolvers) == 0 {
			return nil, errors.New("domain resolvers: none configured and none in /etc/resolv.conf")
		}
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	return c, nil
}

// Check is a registry.DelegationCheck: nil when both CNAMEs point at
// fqdn's names; an error wrapping registry.ErrNotDelegated that names the
// missing or wrong record; another error when no resolver answered (the
// claim is then neither given nor taken away).
func (c *Checker) Check(ctx context.Context, domain, fqdn string) error {
	pairs := [][2]string{
		{domain, fqdn},
		{"_acme-challenge." + domain, "_acme-challenge." + fqdn},
	}
	for _, p := range pairs {
		target, err := c.cname(ctx, p[0])
		if err != nil {
			return err
		}
		want := dns.Fqdn(p[1])
		switch {
		case target == "":
			return fmt.Errorf("%w: %s has no CNAME record; set %s CNAME %s", registry.ErrNotDelegated, p[0], dns.Fqdn(p[0]), want)
		case !strings.EqualFold(target, want):
			return fmt.Errorf("%w: %s is a CNAME to %s, not to %s", registry.ErrNotDelegated, p[0], target, want)
		}
	}
	return nil
}

// cname returns the target of name's CNAME ("" for none), from the first
// resolver that answers.
func (c *Checker) cname(ctx context.Context, name string) (string, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeCNAME)
	q.RecursionDesired = true
	var errs []error
	for _, server := range c.Resolvers {
		r, err := c.exchange(ctx, q, server)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", server, err))
			continue
		}
		switch r.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
		default:
			// SERVFAIL, REFUSED: this resolver cannot tell; ask the next.
			errs = append(errs, fmt.Errorf("%s: %s", server, dns.RcodeToString[r.Rcode]))
			continue
		}
		for _, rr := range r.Answer {
			if cn, ok := rr.(*dns.CNAME); ok && strings.EqualFold(cn.Hdr.Name, q.Question[0].Name) {
				return cn.Target, nil
			}
		}
		return "", nil
	}
	return "", fmt.Errorf("no resolver answered for %s: %w", name, errors.Join(errs...))
}

// exchange asks server over UDP, then over TCP when the answer was cut.
func (c *Checker) exchange(ctx context.Context, q *dns.Msg, server string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	cl := &dns.Client{Net: "udp", Timeout: c.Timeout}
	r, _, err := cl.ExchangeContext(ctx, q, server)
	if err == nil && r.Truncated {
		cl.Net = "tcp"
		r, _, err = cl.ExchangeContext(ctx, q, server)
	}
	if err != nil {
		return nil, err
	}
	if r.Id != q.Id {
		return nil, errors.New("answer for another query")
	}
	return r, nil
}
