// Package agent is the gateway agent itself: it ties the other internal
// packages together. On first run it registers a provisional name derived
// from the MAC address and keeps the token in the state directory; it
// obtains and renews the name's certificate, opens the tunnel once the
// certificate is there, serves the tunnel's streams and the LAN HTTPS port
// through the proxy, pings the cloud, serves the setup page and advertises
// it with mDNS. When the owner chooses a name (or reclaims one) it obtains
// that name's certificate first, then switches to it and gives the old name
// up. After a restart it reuses the state: no new registration.
//
// Each job lives in its own package; this one only decides when they run.
// Its files follow its concerns: lifecycle.go (Run, and the one place that
// stops what it started), serving.go (the LAN servers), registration.go
// (names, switching, giving names up), certificates.go, tunnel.go,
// ping.go (pings and mDNS), status.go, owner.go (the setup page's
// actions) and transport.go (how the cloud is reached).
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/certs"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/cloudapi"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/config"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/forward"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/proxy"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/state"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/status"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
)

// Options are what the command adds to the configuration.
type Options struct {
	// Version is reported in the status and the User-Agent.
	Version string
	// Logger receives the agent's events; nil discards them.
	Logger *slog.Logger
	// RenewCheckInterval overrides CertMagic's renewal check period
	// (tests with short-lived certificates).
	RenewCheckInterval time.Duration
	// TunnelBackoff overrides the tunnel's reconnection delays (tests).
	TunnelBackoff client.Backoff
	// NodesRefresh overrides how often the cloud's node list is asked
	// for while all tunnels are up (tests); 0 means 3 minutes.
	NodesRefresh time.Duration
}

// Agent runs the gateway agent. Create it with New, then Run it once.
type Agent struct {
	cfg config.Config
	// set is cfg's parsed settings, from Validate.
	set   config.Settings
	opts  Options
	log   *slog.Logger
	store *state.Store
	api   *cloudapi.Client
	// tunnelHTTP has no overall timeout: the WebSocket lives long.
	tunnelHTTP *http.Client
	certs      *certs.Manager
	proxy      *proxy.Server
	// forwards are this gateway's local forwarding listeners (source
	// side); target serves the forwarding streams other gateways open
	// toward it.
	forwards *forward.Manager
	target   *forward.Target

	wake        chan struct{}
	pingTrigger chan struct{}

	mu       sync.Mutex
	st       state.State
	regErr   error
	ping     status.Ping
	pingErr  error
	addrs    []netip.Addr
	tuns     *tunnelSet
	retryRet time.Time // next attempt at unsubscribing retired names
	// now is the clock of the rename grace period (tests move it).
	now     func() time.Time
	started bool
	// runCtx is Run's context: background work (certificates of a name
	// chosen in the setup page) lives as long as the agent, not as long
	// as the request that started it.
	runCtx context.Context
}

// New checks the configuration and prepares the agent; nothing runs yet.
func New(cfg config.Config, opts Options) (*Agent, error) {
	set, err := cfg.Validate()
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, set: set, opts: opts, now: time.Now, log: opts.Logger, wake: make(chan struct{}, 1), pingTrigger: make(chan struct{}, 1)}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	store, err := state.Open(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	a.store = store
	transport, err := cloudTransport(cfg, set.Resolve)
	if err != nil {
		return nil, err
	}
	ua := "gatehouse-gateway-agent/" + opts.Version
	a.api = &cloudapi.Client{Endpoint: cfg.Cloud, HTTPClient: &http.Client{Transport: transport, Timeout: 30 * time.Second}, UserAgent: ua}
	a.tunnelHTTP = &http.Client{Transport: transport}
	var acmeRoots *x509.CertPool
	if cfg.ACMERoot != "" {
		if acmeRoots, err = loadRoots(cfg.ACMERoot); err != nil {
			return nil, err
		}
	}
	a.certs, err = certs.New(certs.Config{
		StateDir:           cfg.StateDir,
		Directory:          set.ACMEDirectory,
		Roots:              acmeRoots,
		Email:              cfg.ACMEEmail,
		Resolvers:          cfg.ACMEResolvers,
		Endpoint:           cfg.Cloud,
		HTTPClient:         a.api.HTTPClient,
		Wildcard:           cfg.Wildcard,
		RenewCheckInterval: opts.RenewCheckInterval,
		OnChange:           func(string) { a.wakeUp() },
		Logger:             a.log.With("component", "certs"),
	})
	if err != nil {
		return nil, err
	}
	pc := proxy.Config{
		Upstream:       set.Upstream,
		UpstreamAddr:   set.UpstreamAddr,
		Passthrough:    cfg.Passthrough,
		ProxyProtocol:  cfg.ProxyProtocol,
		GetCertificate: a.certs.GetCertificate,
		Logger:         a.log.With("component", "proxy"),
		DialTimeout:    time.Duration(cfg.UpstreamDialTimeout),
	}
	if !cfg.Passthrough {
		if err := proxySettings(cfg, &pc); err != nil {
			return nil, err
		}
	}
	if a.proxy, err = proxy.New(pc); err != nil {
		return nil, err
	}
	a.target = &forward.Target{Allow: set.ForwardAllow, DialTimeout: time.Duration(cfg.ForwardDialTimeout), Logger: a.log.With("component", "forward")}
	a.forwards = forward.NewManager(tunnelOpener{a}, forward.Settings{TunnelWait: time.Duration(cfg.ForwardWait), Logger: a.log.With("component", "forward")})
	return a, nil
}

// proxySettings carries the settings of proxy mode over to the proxy.
func proxySettings(cfg config.Config, pc *proxy.Config) error {
	pc.ResponseTimeout = time.Duration(cfg.UpstreamResponseTimeout)
	pc.UpstreamHost = cfg.UpstreamHost
	pc.Forwarded = cfg.ForwardedHeader
	if cfg.UpstreamCA != "" || cfg.UpstreamInsecureSkipVerify {
		// Skipping verification is the owner's choice, for a
		// self-signed app on the gateway itself.
		pc.UpstreamTLS = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.UpstreamInsecureSkipVerify}
		if cfg.UpstreamCA != "" {
			pool, err := loadRoots(cfg.UpstreamCA)
			if err != nil {
				return fmt.Errorf("upstream_ca: %w", err)
			}
			pc.UpstreamTLS.RootCAs = pool
		}
	}
	return nil
}

func (a *Agent) wakeUp() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *Agent) triggerPing() {
	select {
	case a.pingTrigger <- struct{}{}:
	default:
	}
}
