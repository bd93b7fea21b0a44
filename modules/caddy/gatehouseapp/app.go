// Package gatehouseapp is the Caddy app `gatehouse`: the configuration and
// lifecycle of one cloud node (modules/node, which owns the registry, the
// zone index, the hub and the forwarding relay), plus the zone's DNS
// listeners, which it opens through Caddy so reloads keep the sockets. The
// HTTP handler and the listener wrapper reach it with ctx.App("gatehouse").
//
// It is an adapter: the logic lives in the plain packages it wires up.
package gatehouseapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"

	"github.com/gatehouse-project/gatehouse/modules/dnszone"
	"github.com/gatehouse-project/gatehouse/modules/domaincheck"
	"github.com/gatehouse-project/gatehouse/modules/node"
	"github.com/gatehouse-project/gatehouse/modules/ratelimit"
	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the `gatehouse` Caddy app: the configuration and lifecycle of a
// cloud node (modules/node), which holds the logic.
type App struct {
	// Zone is the DNS zone gateways are named in, e.g. "box.example.org".
	Zone string `json:"zone"`
	// StorageRaw is the registry's database, a gatehouse.storage module
	// chosen by "driver": sqlite (the default) or postgres.
	StorageRaw json.RawMessage `json:"storage,omitempty" caddy:"namespace=gatehouse.storage inline_key=driver"`
	// ExpireAfter is how long a gateway may stay silent before it loses its
	// addresses and tunnel (its name stays its owner's). 0 never expires.
	ExpireAfter caddy.Duration `json:"expire_after,omitempty"`
	// Reserved lists names that may not be registered, in addition to
	// api, www, ns<digits>, _psl and local.
	Reserved []string `json:"reserved,omitempty"`
	// Email configures the SMTP server that sends verification and
	// reclamation mails. Without it, the email flows answer an error.
	Email *EmailConfig `json:"email,omitempty"`
	// RateLimits guard the endpoints that create names or send mail.
	RateLimits *RateLimits `json:"rate_limits,omitempty"`
	// MaxRecords bounds the DNS records one gateway may hold (default 64).
	MaxRecords int `json:"max_records,omitempty"`
	// DNS serves the zone authoritatively. Without it, no DNS is served
	// (another server may then be fed by the registry).
	DNS *DNSConfig `json:"dns,omitempty"`
	// Tunnel tunes the agents' tunnel sessions: the library's own config
	// (durations in JSON are nanoseconds, as Caddy writes every duration).
	Tunnel *tunnel.Config `json:"tunnel,omitempty"`
	// Forward holds the agent-to-agent forwarding rules.
	Forward *ForwardConfig `json:"forward,omitempty"`
	// OperatorToken is the cloud operator's credential for the records
	// API: with it, the libdns provider (`dns gatehouse` in a tls block)
	// manages the zone's own ACME challenge, _acme-challenge.ZONE, and
	// nothing else, so that the cloud obtains its *.ZONE certificate. Give
	// a placeholder such as {env.GATEHOUSE_OPERATOR_TOKEN}: it is resolved
	// when the app is provisioned and then kept as a hash in memory only.
	// At least 32 characters; empty (or an unset variable) disables it.
	OperatorToken string `json:"operator_token,omitempty"`
	// TokenSealKey (32 bytes, hex or base64; give a placeholder such as
	// {env.GATEHOUSE_SEAL_KEY}) seals each gateway's token beside its
	// hash, which PageKite's signatures need. Without it PageKite is off.
	// Losing or changing it only costs the seals: each is made again when
	// its gateway next presents its token.
	TokenSealKey string `json:"token_seal_key,omitempty"`
	// Cluster makes this node one of several sharing the postgres
	// storage, each reaching the gateways any of them holds.
	Cluster *ClusterConfig `json:"cluster,omitempty"`
	// ACMEDNSRegister turns on acme-dns's POST /register on the API:
	// anyone may then create a gateway with a random name (within the
	// subscribe rate limit), as on an acme-dns server.
	ACMEDNSRegister bool `json:"acmedns_register,omitempty"`
	// DomainResolvers are the recursive resolvers (host:port) that check
	// the CNAMEs of the gateways' custom domains; default the system's
	// (/etc/resolv.conf).
	DomainResolvers []string `json:"domain_resolvers,omitempty"`
	// DomainRecheckInterval is how often every custom domain's CNAMEs are
	// checked again; a claim that lost one is dropped (default 1h).
	DomainRecheckInterval caddy.Duration `json:"domain_recheck_interval,omitempty"`
	// NoCustomDomains turns the custom domains off (/v1/domains answers
	// 404, no name outside the zone is routed to a gateway).
	NoCustomDomains bool `json:"no_custom_domains,omitempty"`

	node      *node.Node
	domains   *registry.Domains
	sealer    *registry.Sealer
	limits    Limiters
	logger    *zap.Logger
	dnsServer *dnszone.Server
	metrics   *metrics
	// operatorHash is the SHA-256 of the operator token, nil without one.
	operatorHash []byte
}

// Storage is what a gatehouse.storage module provides.
type Storage interface {
	// OpenStore opens the registry's store.
	OpenStore(ctx context.Context) (registry.Store, error)
	// PingWorkers is how many ping batches the store commits at once.
	PingWorkers() int
}

// SharedStorage is a Storage that several nodes can share, and so a
// cluster: the cluster's tables live beside the registry's.
type SharedStorage interface {
	// ClusterDSN is the database's connection string, placeholders
	// resolved.
	ClusterDSN() string
}

// shared holds the hub of each zone across config reloads (see
// node.Shared): Caddy provisions the new App before it stops the old one.
var shared node.Shared

// RateLimit allows Burst events at once, then one per Every, per client IP.
type RateLimit struct {
	Every caddy.Duration `json:"every,omitempty"`
	Burst int            `json:"burst,omitempty"`
}

// RateLimits per endpoint group.
type RateLimits struct {
	// Subscribe guards /subscribe and /v1/subscribe (default 10, then one
	// per minute).
	Subscribe *RateLimit `json:"subscribe,omitempty"`
	// Reclaim guards /reclaim (default 3, then one per 10 minutes).
	Reclaim *RateLimit `json:"reclaim,omitempty"`
	// Email guards /setemail (default 3, then one per 10 minutes).
	Email *RateLimit `json:"email,omitempty"`
}

// Limiters are the live rate limiters, shared by every handler of the app.
type Limiters struct {
	Subscribe, Reclaim, Email *ratelimit.Limiter
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "gatehouse",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision opens the store and builds the node.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	a.Zone = strings.ToLower(strings.TrimSuffix(repl.ReplaceKnown(a.Zone, ""), "."))
	if err := a.Validate(); err != nil {
		return err
	}
	if err := a.provisionOperator(repl); err != nil {
		return err
	}
	if err := a.provisionSealKey(repl); err != nil {
		return err
	}
	if a.Email != nil {
		if err := a.Email.provision(repl); err != nil {
			return err
		}
	}
	if a.DNS != nil {
		if err := a.DNS.validate(a.Zone); err != nil {
			return err
		}
	}
	var fwd ForwardConfig
	if a.Forward != nil {
		fwd = *a.Forward
	}
	if err := fwd.Rules.Validate(); err != nil {
		return err
	}
	storage, err := a.loadStorage(ctx)
	if err != nil {
		return err
	}
	a.limits = a.RateLimits.build()

	openCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	store, err := storage.OpenStore(openCtx)
	if err != nil {
		return err
	}
	cfg := node.Config{
		Zone: a.Zone,
		Registry: registry.Config{
			ExpireAfter: time.Duration(a.ExpireAfter),
			Reserved:    a.Reserved,
			MaxRecords:  a.MaxRecords,
			PingWorkers: storage.PingWorkers(),
			Sealer:      a.sealer,
			OnSealError: func(name string, err error) {
				a.logger.Warn("sealing a gateway's token failed; retried when it next presents it", zap.String("gateway", name), zap.Error(err))
			},
		},
		Forward:            fwd.Rules,
		ForwardOpenTimeout: time.Duration(fwd.OpenTimeout),
		Logger:             slog.New(zapslog.NewHandler(a.logger.Core())),
		KiteLogger:         a.logger.Named("pagekite"),
	}
	if a.DNS != nil {
		cfg.DNS = &a.DNS.Config
	}
	if a.Cluster != nil {
		var dsn string
		if ss, ok := storage.(SharedStorage); ok {
			dsn = ss.ClusterDSN()
		}
		if cfg.Cluster, err = a.Cluster.provision(ctx, repl, dsn, cfg.Logger); err != nil {
			_ = store.Close()
			return err
		}
		cfg.Cluster.Link = a.tunnelConfig()
	}
	if a.Email != nil {
		cfg.Notifier = a.Email.notifier(a.Zone)
	}
	if a.metrics, err = registerMetrics(ctx.GetMetricsRegistry(), a); err != nil {
		_ = store.Close()
		return err
	}
	// Last: from here on the shared hub's streams go to this node's
	// relay, so nothing after it may fail.
	lease := shared.Acquire(a.Zone, cfg.Logger)
	if a.node, err = node.New(store, cfg, lease); err != nil {
		_ = lease.Release()
		_ = store.Close()
		return err
	}
	a.provisionDomains()
	return nil
}

// provisionDomains sets up the custom domains unless they are off. It
// cannot fail, since it runs after the node took the hub: without
// resolvers (none configured, none in /etc/resolv.conf) the domains are
// off and a warning says why.
func (a *App) provisionDomains() {
	if a.NoCustomDomains {
		return
	}
	checker, err := domaincheck.New(a.DomainResolvers, 0)
	if err != nil {
		a.logger.Warn("custom domains are off: no resolver to check their CNAMEs", zap.Error(err))
		return
	}
	a.domains = registry.NewDomains(a.node.Registry(), registry.DomainsConfig{
		Zone:            a.Zone,
		Check:           checker.Check,
		RecheckInterval: time.Duration(a.DomainRecheckInterval),
		OnDrop: func(c registry.DomainClaim, reason error) {
			a.logger.Warn("custom domain dropped: its CNAMEs no longer point at the gateway",
				zap.String("domain", c.Domain), zap.String("gateway", c.Gateway), zap.Error(reason))
		},
	})
}

// loadStorage loads the storage guest module (SQLite by default).
func (a *App) loadStorage(ctx caddy.Context) (Storage, error) {
	if a.StorageRaw == nil {
		a.StorageRaw = json.RawMessage(`{"driver":"sqlite"}`)
	}
	mod, err := ctx.LoadModule(a, "StorageRaw")
	if err != nil {
		return nil, fmt.Errorf("gatehouse: storage: %w", err)
	}
	storage, ok := mod.(Storage)
	if !ok {
		return nil, fmt.Errorf("gatehouse: storage module %T opens no store", mod)
	}
	return storage, nil
}

// Validate checks the configuration.
func (a *App) Validate() error {
	if a.Zone == "" {
		return errors.New("gatehouse: zone is required")
	}
	if a.ExpireAfter < 0 {
		return errors.New("gatehouse: expire_after must not be negative")
	}
	if a.DomainRecheckInterval < 0 {
		return errors.New("gatehouse: domain_recheck_interval must not be negative")
	}
	if !a.NoCustomDomains && len(a.DomainResolvers) > 0 {
		if _, err := domaincheck.New(a.DomainResolvers, 0); err != nil {
			return fmt.Errorf("gatehouse: %w", err)
		}
	}
	return nil
}

// Start loads the zone and runs the node, then opens the DNS listeners.
func (a *App) Start() error {
	if err := a.node.Start(); err != nil {
		return err
	}
	if a.domains != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := a.domains.Start(ctx)
		cancel()
		if err != nil {
			return fmt.Errorf("gatehouse: loading the custom domains: %w", err)
		}
	}
	if a.DNS != nil {
		if err := a.startDNS(context.Background()); err != nil {
			return err
		}
	}
	a.logger.Info("gatehouse started", zap.String("zone", a.Zone))
	return nil
}

// Stop ends the DNS service and the node's background work, and lets go
// of the shared hub (the last holder closes the tunnels).
func (a *App) Stop() error {
	var err error
	if a.dnsServer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = a.dnsServer.Shutdown(ctx)
		cancel()
	}
	if a.domains != nil {
		a.domains.Stop()
	}
	return errors.Join(err, a.node.Stop())
}

// Cleanup closes the store (and, for an App that was never stopped, lets
// go of the hub).
func (a *App) Cleanup() error {
	if a.domains != nil {
		// Caddy does not Stop an app whose Start failed (the DNS server
		// after the domains started, say); their rechecks must not
		// outlive the store that node.Close closes. Stop is idempotent.
		a.domains.Stop()
	}
	if a.node != nil {
		return a.node.Close()
	}
	return nil
}

// Node is the cloud node.
func (a *App) Node() *node.Node { return a.node }

// Hub returns the live tunnels, for the listener wrapper that relays
// ingress connections down them. It is the same hub across config reloads
// of the same zone.
func (a *App) Hub() *hub.Hub { return a.node.Hub() }

// Tunnels finds a gateway's live tunnel, on this node or, in a cluster,
// through another node that holds it: ingress, the offline page and the
// admin's online view use it.
func (a *App) Tunnels() node.Tunnels { return a.node.Tunnels() }

// GatewayName returns the gateway that host belongs to (see
// node.Node.GatewayName).
func (a *App) GatewayName(host string) (string, bool) { return a.node.GatewayName(host) }

// Domains returns the custom domains, nil when they are off.
func (a *App) Domains() *registry.Domains { return a.domains }

// DomainGateway returns the gateway that claimed host as its custom
// domain, for the listener wrapper's routing.
func (a *App) DomainGateway(host string) (string, bool) {
	if a.domains == nil {
		return "", false
	}
	return a.domains.Gateway(host)
}

// Registry returns the app's registry, for the handler module.
func (a *App) Registry() *registry.Registry { return a.node.Registry() }

// Limiters returns the app's rate limiters, for the handler module.
func (a *App) Limiters() Limiters { return a.limits }

// ZoneName returns the zone without trailing dot.
func (a *App) ZoneName() string { return a.Zone }

func (rl *RateLimits) build() Limiters {
	def := func(r *RateLimit, every time.Duration, burst int) *ratelimit.Limiter {
		if r != nil {
			if r.Every > 0 {
				every = time.Duration(r.Every)
			}
			if r.Burst > 0 {
				burst = r.Burst
			}
		}
		return ratelimit.New(every, burst, 0)
	}
	if rl == nil {
		rl = &RateLimits{}
	}
	return Limiters{
		Subscribe: def(rl.Subscribe, time.Minute, 10),
		Reclaim:   def(rl.Reclaim, 10*time.Minute, 3),
		Email:     def(rl.Email, 10*time.Minute, 3),
	}
}

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
