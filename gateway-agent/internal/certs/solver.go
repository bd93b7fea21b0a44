package certs

import (
	"context"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/zap"
)

// solver is the DNS-01 solver of every managed name. A gateway name's
// challenge goes where the CA looks, _acme-challenge.NAME.ZONE. A custom
// domain's goes to the gateway's own _acme-challenge.NAME.ZONE instead:
// the CA follows _acme-challenge.DOMAIN's CNAME there, and the cloud holds
// no record of the owner's zone. CertMagic's DNS01Solver has
// OverrideDomain for this, but one value for all names; so there is one
// solver per target name, and each challenge keeps the solver that
// presented it until it is cleaned up (the domain may be unmanaged
// meanwhile).
type solver struct {
	m      *Manager
	logger *zap.Logger

	mu      sync.Mutex
	direct  *certmagic.DNS01Solver
	byVia   map[string]*certmagic.DNS01Solver // by the delegation target
	present map[string]*certmagic.DNS01Solver // by challenge token
}

func newSolver(m *Manager, zl *zap.Logger) *solver {
	s := &solver{m: m, logger: zl, byVia: map[string]*certmagic.DNS01Solver{}, present: map[string]*certmagic.DNS01Solver{}}
	s.direct = s.newDNS01("")
	return s
}

func (s *solver) newDNS01(override string) *certmagic.DNS01Solver {
	return &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
		DNSProvider:        recordsProvider{s.m},
		TTL:                60 * time.Second,
		Resolvers:          s.m.cfg.Resolvers,
		PropagationTimeout: s.m.cfg.PropagationTimeout,
		OverrideDomain:     override,
		Logger:             s.logger,
	}}
}

// pick chooses the solver of a new challenge and remembers it.
func (s *solver) pick(chal acme.Challenge) *certmagic.DNS01Solver {
	via := s.m.DelegationOf(chal.Identifier.Value)
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.direct
	if via != "" {
		if d = s.byVia[via]; d == nil {
			d = s.newDNS01("_acme-challenge." + via)
			s.byVia[via] = d
		}
	}
	s.present[chal.Token] = d
	return d
}

// presented is the solver that presented chal; the direct one when none
// did (its cleanup then finds nothing, as CertMagic's own would).
func (s *solver) presented(chal acme.Challenge, forget bool) *certmagic.DNS01Solver {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.present[chal.Token]
	if forget {
		delete(s.present, chal.Token)
	}
	if d == nil {
		d = s.direct
	}
	return d
}

func (s *solver) Present(ctx context.Context, chal acme.Challenge) error {
	return s.pick(chal).Present(ctx, chal)
}

func (s *solver) Wait(ctx context.Context, chal acme.Challenge) error {
	return s.presented(chal, false).Wait(ctx, chal)
}

func (s *solver) CleanUp(ctx context.Context, chal acme.Challenge) error {
	return s.presented(chal, true).CleanUp(ctx, chal)
}

var (
	_ acmez.Solver = (*solver)(nil)
	_ acmez.Waiter = (*solver)(nil)
)
