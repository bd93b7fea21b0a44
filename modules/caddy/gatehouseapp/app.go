// Package gatehouseapp is the Caddy app `gatehouse`: it owns the registry
// and its store, the zone's authoritative DNS servers, the expiry sweeper
// and the hub of live tunnel sessions. The HTTP handler and the listener
// wrapper reach it with ctx.App("gatehouse").
//
// It is an adapter: the logic lives in the plain packages it wires up.
package gatehouseapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"

	"github.com/gatehouse-project/gatehouse/modules/dnszone"
	"github.com/gatehouse-project/gatehouse/modules/forward"
	"github.com/gatehouse-project/gatehouse/modules/ratelimit"
	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/pgstore"
	"github.com/gatehouse-project/gatehouse/modules/registry/sqlitestore"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the `gatehouse` Caddy app.
type App struct {
	// Zone is the DNS zone gateways are named in, e.g. "box.example.org".
	Zone string `json:"zone"`
	// Storage selects and configures the registry's database.
	Storage StorageConfig `json:"storage"`
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
	// Tunnel tunes the agents' tunnel sessions.
	Tunnel *TunnelConfig `json:"tunnel,omitempty"`
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

	store    registry.Store
	registry *registry.Registry
	limits   Limiters
	logger   *zap.Logger
	cancel   context.CancelFunc
	// background tracks the goroutines the app starts (following other
	// nodes' changes, dropping revoked tunnels), so Stop can wait for them.
	background *sync.WaitGroup
	dnsIndex   *dnszone.Index
	dnsHandler *dnszone.Handler
	dnsServer  *dnszone.Server
	hub        *hub.Hub
	relay      *forward.Relay
	metrics    *metrics
	// operatorHash is the SHA-256 of the operator token, nil without one.
	operatorHash []byte
}

// StorageConfig selects the store: "sqlite" with a file path (the embedded
// default) or "postgres" with a DSN, which several cloud nodes can share.
type StorageConfig struct {
	// Driver is "sqlite" or "postgres".
	Driver string `json:"driver,omitempty"`
	// Path is the SQLite database file.
	Path string `json:"path,omitempty"`
	// DSN is the PostgreSQL connection string; placeholders such as
	// {env.GATEHOUSE_PG} are resolved.
	DSN string `json:"dsn,omitempty"`
}

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

// Provision opens the store and builds the registry.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	a.Zone = strings.ToLower(strings.TrimSuffix(repl.ReplaceKnown(a.Zone, ""), "."))
	a.Storage.Path = repl.ReplaceKnown(a.Storage.Path, "")
	a.Storage.DSN = repl.ReplaceKnown(a.Storage.DSN, "")
	if a.Storage.Driver == "" {
		a.Storage.Driver = "sqlite"
	}
	if a.Storage.Driver == "sqlite" && a.Storage.Path == "" {
		a.Storage.Path = caddy.AppDataDir() + "/gatehouse/registry.db"
	}
	if err := a.Validate(); err != nil {
		return err
	}
	if err := a.provisionOperator(repl); err != nil {
		return err
	}
	if a.Email != nil {
		if err := a.Email.provision(repl); err != nil {
			return err
		}
	}
	a.limits = a.RateLimits.build()
	slogger := slog.New(zapslog.NewHandler(a.logger.Core()))
	reserved := a.Reserved
	if a.DNS != nil {
		if err := a.DNS.validate(a.Zone); err != nil {
			return err
		}
		a.dnsIndex = dnszone.NewIndex()
		zc := a.DNS.zoneConfig(a.Zone)
		h, err := dnszone.NewHandler(zc, a.dnsIndex, slogger)
		if err != nil {
			return fmt.Errorf("gatehouse dns: %w", err)
		}
		a.dnsHandler = h
		// Names the zone itself answers for cannot be registered.
		reserved = append(append([]string{}, reserved...), zc.ReservedNames()...)
	}
	a.background = new(sync.WaitGroup)
	a.hub = a.acquireHub(slogger)

	openCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var err error
	workers := 1
	switch a.Storage.Driver {
	case "sqlite":
		if err := os.MkdirAll(filepath.Dir(a.Storage.Path), 0o700); err != nil {
			return fmt.Errorf("gatehouse: storage folder: %w", err)
		}
		a.store, err = sqlitestore.Open(openCtx, a.Storage.Path)
	case "postgres":
		a.store, err = pgstore.Open(openCtx, a.Storage.DSN)
		workers = 4
	}
	if err != nil {
		return fmt.Errorf("gatehouse: opening %s store: %w", a.Storage.Driver, err)
	}
	var notifier registry.Notifier
	if a.Email != nil {
		notifier = a.Email.notifier(a.Zone)
	}
	a.registry = registry.New(a.store, registry.Config{
		ExpireAfter: time.Duration(a.ExpireAfter),
		Reserved:    reserved,
		MaxRecords:  a.MaxRecords,
		PingWorkers: workers,
	}, notifier)
	a.registry.Observe(a.apply)
	var err2 error
	if a.metrics, err2 = registerMetrics(ctx.GetMetricsRegistry(), a); err2 != nil {
		return err2
	}
	// Last: on a reload, the hub's streams go to this App's relay as soon
	// as it is provisioned, so nothing after it may fail.
	return a.provisionForward(slogger)
}

// Validate checks the configuration.
func (a *App) Validate() error {
	if a.Zone == "" {
		return errors.New("gatehouse: zone is required")
	}
	switch a.Storage.Driver {
	case "sqlite":
		if a.Storage.Path == "" {
			return errors.New("gatehouse: storage sqlite needs a path")
		}
	case "postgres":
		if a.Storage.DSN == "" {
			return errors.New("gatehouse: storage postgres needs a DSN")
		}
	default:
		return fmt.Errorf("gatehouse: unknown storage driver %q (sqlite or postgres)", a.Storage.Driver)
	}
	if a.ExpireAfter < 0 {
		return errors.New("gatehouse: expire_after must not be negative")
	}
	return nil
}

// Start loads the DNS index from the store, opens the DNS listeners and
// runs the registry's background work.
func (a *App) Start() error {
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	if a.dnsIndex != nil {
		start := time.Now()
		err := a.store.ForEachGateway(ctx, func(g *registry.Gateway, recs []registry.Record) error {
			a.dnsIndex.Put(g, recs)
			return nil
		})
		if err != nil {
			return fmt.Errorf("gatehouse: loading the zone: %w", err)
		}
		if err := a.loadZoneRecords(ctx); err != nil {
			return err
		}
		a.logger.Info("zone loaded", zap.Int("gateways", a.dnsIndex.Len()), zap.Duration("took", time.Since(start)))
		if err := a.startDNS(ctx); err != nil {
			return err
		}
	}
	a.registry.Start()
	if ch, err := a.store.Changes(ctx); err != nil {
		return fmt.Errorf("gatehouse: listening for changes: %w", err)
	} else if ch != nil {
		a.background.Go(func() { a.followChanges(ctx, ch) })
	}
	a.logger.Info("gatehouse started", zap.String("zone", a.Zone), zap.String("storage", a.Storage.Driver))
	return nil
}

// followChanges applies other nodes' writes to this node's in-memory state.
func (a *App) followChanges(ctx context.Context, ch <-chan registry.Subtree) {
	for name := range ch {
		if name == registry.ResyncAll {
			a.resync(ctx)
			continue
		}
		if err := a.registry.Reload(ctx, name); err != nil && ctx.Err() == nil {
			a.logger.Warn("reloading changed records", zap.Stringer("subtree", name), zap.Error(err))
		}
	}
}

// resync reloads the whole zone after changes may have been missed. Names
// gone from the store meanwhile are found by comparing with the index.
func (a *App) resync(ctx context.Context) {
	if a.dnsIndex == nil {
		return
	}
	fresh := dnszone.NewIndex()
	err := a.store.ForEachGateway(ctx, func(g *registry.Gateway, recs []registry.Record) error {
		a.dnsIndex.Put(g, recs)
		fresh.Put(g, recs)
		return nil
	})
	if err != nil {
		a.logger.Warn("resyncing the zone", zap.Error(err))
		return
	}
	for _, name := range a.dnsIndex.Names() {
		if !fresh.Has(name) {
			a.dnsIndex.Remove(name)
		}
	}
	if err := a.loadZoneRecords(ctx); err != nil {
		a.logger.Warn("resyncing the zone's own records", zap.Error(err))
	}
	a.logger.Info("zone resynced after a lost notification connection", zap.Int("gateways", a.dnsIndex.Len()))
}

// Stop ends the background work, the DNS service and the tunnels.
func (a *App) Stop() error {
	if a.cancel != nil {
		a.cancel()
	}
	a.registry.Stop()
	a.background.Wait()
	var err error
	if a.dnsServer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = a.dnsServer.Shutdown(ctx)
		cancel()
	}
	return errors.Join(err, a.releaseHub())
}

// apply keeps the DNS index and the live tunnels in step with the registry.
func (a *App) apply(ev registry.Event) {
	if name, ok := ev.Subtree.Gateway(); ok && ev.Revoked {
		// Drop waits for the agent to hear why; the registry must not.
		reason := "gateway " + revokeReason(ev)
		a.background.Go(func() { a.hub.Drop(name, reason) })
	}
	if a.dnsIndex != nil {
		a.dnsIndex.Apply(ev)
	}
}

func revokeReason(ev registry.Event) string {
	switch {
	case ev.Gateway == nil:
		return "unsubscribed"
	case ev.Gateway.Disabled:
		return "disabled by the operator"
	case ev.Gateway.Expired:
		return "expired"
	}
	return "token replaced"
}

// Cleanup closes the store.
func (a *App) Cleanup() error {
	_ = a.releaseHub()
	if a.store != nil {
		return a.store.Close()
	}
	return nil
}

// Registry returns the app's registry, for the handler module.
func (a *App) Registry() *registry.Registry { return a.registry }

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
