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
package agent

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/certs"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/cloudapi"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/config"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/forward"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/localapi"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/mdns"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/netinfo"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/pinger"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/proxy"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/setupui"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/state"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/status"
	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
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
	upstream   *url.URL
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
	tun      *tunnelRun
	retryRet time.Time // next attempt at unsubscribing retired names
	started  bool
	// runCtx is Run's context: background work (certificates of a name
	// chosen in the setup page) lives as long as the agent, not as long
	// as the request that started it.
	runCtx context.Context
}

// tunnelRun is one running tunnel client and how to stop it.
type tunnelRun struct {
	name   string
	c      *client.Client
	cancel context.CancelFunc
	done   chan struct{}
}

// New checks the configuration and prepares the agent; nothing runs yet.
func New(cfg config.Config, opts Options) (*Agent, error) {
	set, err := cfg.Validate()
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, set: set, opts: opts, log: opts.Logger, wake: make(chan struct{}, 1), pingTrigger: make(chan struct{}, 1)}
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
	}
	if a.proxy, err = proxy.New(pc); err != nil {
		return nil, err
	}
	a.target = &forward.Target{Allow: set.ForwardAllow, DialTimeout: time.Duration(cfg.ForwardDialTimeout), Logger: a.log.With("component", "forward")}
	a.forwards = forward.NewManager(tunnelOpener{a}, forward.Settings{TunnelWait: time.Duration(cfg.ForwardWait), Logger: a.log.With("component", "forward")})
	return a, nil
}

// tunnelOpener opens forwarding streams on whichever tunnel client runs
// now: the client is replaced when the gateway changes name.
type tunnelOpener struct{ a *Agent }

func (o tunnelOpener) Open(ctx context.Context, init tunnel.Initiator) (*tunnel.Stream, error) {
	o.a.mu.Lock()
	run := o.a.tun
	o.a.mu.Unlock()
	if run == nil {
		return nil, client.ErrNotConnected
	}
	return run.c.Open(ctx, init)
}

// handleStream serves a stream the cloud opened: a forwarding from another
// gateway (destination set) goes to the allow-list, public ingress to the
// proxy.
func (a *Agent) handleStream(st *tunnel.Stream) {
	if forward.IsForwarding(st.Initiator()) {
		a.mu.Lock()
		ctx := a.runCtx
		a.mu.Unlock()
		a.target.Handle(ctx, st)
		return
	}
	a.proxy.HandleStream(st)
}

func loadRoots(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading roots: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return pool, nil
}

// cloudTransport reaches the cloud: its roots when configured, and the
// resolve overrides (host names in lower case).
func cloudTransport(cfg config.Config, overrides map[string]netip.Addr) (*http.Transport, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CloudCA != "" {
		pool, err := loadRoots(cfg.CloudCA)
		if err != nil {
			return nil, err
		}
		t.TLSClientConfig.RootCAs = pool
	}
	d := &net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, port, err := net.SplitHostPort(addr); err == nil {
			if ip, ok := overrides[strings.ToLower(host)]; ok {
				addr = net.JoinHostPort(ip.String(), port)
			}
		}
		return d.DialContext(ctx, network, addr)
	}
	return t, nil
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

// Run runs the agent until ctx ends, then stops everything it started.
func (a *Agent) Run(ctx context.Context) (err error) {
	a.mu.Lock()
	if a.started {
		a.mu.Unlock()
		return errors.New("agent already ran")
	}
	a.started = true
	a.mu.Unlock()

	st, err := a.store.Load()
	if err != nil {
		return err
	}
	if st.Cloud != "" && st.Cloud != a.cfg.Cloud {
		// A token is only good for the cloud that issued it.
		a.log.Warn("state belongs to another cloud: registering anew", "state_cloud", st.Cloud, "cloud", a.cfg.Cloud)
		st = state.State{}
	}
	st.Cloud = a.cfg.Cloud
	a.mu.Lock()
	a.st = st
	a.mu.Unlock()

	rg, ctx := newRunGroup(ctx)
	defer func() {
		if serr := rg.Stop(); err == nil {
			err = serr
		}
	}()
	a.mu.Lock()
	a.runCtx = ctx
	a.mu.Unlock()
	// Stopped in reverse order: the local API, the forwardings (before
	// the tunnel, so that no connection waits for it), the tunnel, the
	// setup page, the LAN port, the certificates, then the last status.
	rg.OnStop(func(context.Context) {
		a.saveStatus()
		a.api.HTTPClient.CloseIdleConnections()
		a.tunnelHTTP.CloseIdleConnections()
	})
	rg.OnStop(func(context.Context) { a.certs.Stop() })
	rg.OnStop(func(ctx context.Context) { _ = a.proxy.Shutdown(ctx) })

	// The servers come first, so the setup page shows what happens
	// while the agent registers.
	if a.cfg.SetupListen != "" {
		ln, err := net.Listen("tcp", a.cfg.SetupListen)
		if err != nil {
			return fmt.Errorf("setup page: %w", err)
		}
		srv := &http.Server{Handler: setupui.New(a, a.log.With("component", "setup")), ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelDebug)}
		rg.Go(func() error { return serveHTTP("setup page", srv, ln) })
		rg.OnStop(func(ctx context.Context) { _ = srv.Shutdown(ctx) })
		a.log.Info("setup page listening", "addr", ln.Addr().String())
		if a.cfg.MDNS {
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			p, _ := strconv.Atoi(port)
			adv := &mdns.Advertiser{Host: a.cfg.MDNSHost, Port: p, Logger: a.log.With("component", "mdns")}
			rg.Go(func() error { a.advertise(ctx, adv); return nil })
		}
	}
	rg.OnStop(func(context.Context) { a.stopTunnel() })
	if a.cfg.HTTPSListen != "" {
		ln, err := net.Listen("tcp", a.cfg.HTTPSListen)
		if err != nil {
			return fmt.Errorf("https port: %w", err)
		}
		a.log.Info("lan https listening", "addr", ln.Addr().String(), "passthrough", a.cfg.Passthrough)
		rg.Go(func() error {
			if err := a.proxy.Serve(ln); err != nil && ctx.Err() == nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("https port: %w", err)
			}
			return nil
		})
	}
	// The forwardings of the configuration listen from the start, before
	// the tunnel is up: their connections wait for it (forward_wait).
	rg.OnStop(func(context.Context) { a.forwards.Close() })
	for _, f := range a.cfg.Forwards {
		if _, err := a.forwards.Add(f, "config"); err != nil {
			return fmt.Errorf("forwarding %s: %w", f.ListenAddr(), err)
		}
	}
	if a.cfg.APIListen != "" {
		key, err := localapi.LoadOrCreateKey(a.cfg.StateDir)
		if err != nil {
			return fmt.Errorf("local api: %w", err)
		}
		ln, err := net.Listen("tcp", a.cfg.APIListen)
		if err != nil {
			return fmt.Errorf("local api: %w", err)
		}
		srv := &http.Server{Handler: localapi.New(key, a.forwards, a.log.With("component", "api")), ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelDebug)}
		rg.Go(func() error { return serveHTTP("local api", srv, ln) })
		rg.OnStop(func(ctx context.Context) { _ = srv.Shutdown(ctx) })
		a.log.Info("local api listening", "addr", ln.Addr().String())
	}

	if err := a.register(ctx); err != nil {
		return err
	}
	a.mu.Lock()
	cur, pend := a.st.Current, a.st.Pending
	a.mu.Unlock()
	if cur.Valid() {
		a.certs.SetFallback(cur.FQDN)
		if err := a.certs.Manage(ctx, cur.FQDN, cur.Token); err != nil {
			return err
		}
	}
	if pend.Valid() {
		if err := a.certs.Manage(ctx, pend.FQDN, pend.Token); err != nil {
			return err
		}
	}

	loop := &pinger.Loop{
		Interval: time.Duration(a.cfg.PingInterval),
		Addrs:    a.localAddrs,
		Ping:     a.doPing,
		Trigger:  a.pingTrigger,
		Logger:   a.log.With("component", "ping"),
	}
	rg.Go(func() error { _ = loop.Run(ctx); return nil })

	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	var lastStatus []byte
	for {
		a.reconcile(ctx)
		lastStatus = a.saveStatusIfChanged(lastStatus)
		select {
		case <-ctx.Done():
			a.log.Info("agent stopping")
			return nil
		case <-a.wake:
		case <-tick.C:
		}
	}
}

// serveHTTP serves srv on ln until it is shut down; any other end is an
// error that stops the agent.
func serveHTTP(what string, srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// register makes sure the agent holds a name: the one in the state, or a
// new provisional one derived from the MAC address. It retries until the
// cloud answers or ctx ends.
func (a *Agent) register(ctx context.Context) error {
	a.mu.Lock()
	have := a.st.Current.Valid() || a.st.Pending.Valid()
	a.mu.Unlock()
	if have {
		a.log.Info("using the registration in the state directory", "name", a.currentName())
		return nil
	}
	mac := a.cfg.MAC
	if mac == "" {
		var err error
		if mac, err = netinfo.MAC(); err != nil {
			return fmt.Errorf("deriving the provisional name: %w", err)
		}
	}
	delay := time.Second
	for {
		reg, err := a.subscribeProvisional(ctx, mac)
		if err == nil {
			a.mu.Lock()
			a.st.Current = reg
			a.regErr = nil
			err = a.store.Save(a.st)
			a.mu.Unlock()
			if err != nil {
				return err
			}
			a.log.Info("registered provisional name", "name", reg.Name, "fqdn", reg.FQDN)
			return nil
		}
		a.mu.Lock()
		a.regErr = err
		a.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		a.log.Warn("registration failed", "error", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Minute)
	}
}

// subscribeProvisional subscribes by MAC; when that name is taken (the
// gateway lost its state), it adds a random suffix.
func (a *Agent) subscribeProvisional(ctx context.Context, mac string) (*state.Registration, error) {
	sub, err := a.api.Subscribe(ctx, cloudapi.SubscribeRequest{MAC: mac, Mode: a.cfg.Mode})
	if errors.Is(err, cloudapi.ErrNameUnavailable) {
		base, merr := registry.NameFromMAC(mac)
		if merr != nil {
			return nil, err
		}
		b := make([]byte, 2)
		_, _ = rand.Read(b)
		name := base + "-" + hex.EncodeToString(b)
		a.log.Warn("provisional name taken (state lost?): using a suffixed one", "name", name)
		sub, err = a.api.Subscribe(ctx, cloudapi.SubscribeRequest{Name: name, Mode: a.cfg.Mode})
	}
	if err != nil {
		return nil, err
	}
	return &state.Registration{Name: sub.Name, Token: sub.Token, FQDN: sub.FQDN, Zone: sub.Zone, Mode: a.cfg.Mode, Provisional: true}, nil
}

func (a *Agent) currentName() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.Current != nil {
		return a.st.Current.Name
	}
	return ""
}

// reconcile moves the agent toward where it should be: switch to a pending
// name whose certificate is there, run the tunnel for the current name once
// its certificate is there, give retired names up.
func (a *Agent) reconcile(ctx context.Context) {
	a.mu.Lock()
	cur, pend := a.st.Current.Clone(), a.st.Pending.Clone()
	a.mu.Unlock()
	if pend.Valid() && (a.cfg.Passthrough || a.certs.Status(pend.FQDN).Ready) {
		a.switchTo(ctx, pend)
		cur = pend
	}
	if a.cfg.Mode == registry.ModeTunnel && cur.Valid() && (a.cfg.Passthrough || a.certs.Status(cur.FQDN).Ready) {
		a.ensureTunnel(cur)
	}
	a.retire(ctx)
}

// switchTo makes pend the current name.
func (a *Agent) switchTo(ctx context.Context, pend *state.Registration) {
	a.mu.Lock()
	old := a.st.Current
	a.st.Current, a.st.Pending = pend, nil
	if old.Valid() && old.Name != pend.Name {
		a.st.Retired = append(a.st.Retired, *old)
	}
	a.retryRet = time.Time{}
	err := a.store.Save(a.st)
	a.mu.Unlock()
	if err != nil {
		a.log.Error("saving state", "error", err)
	}
	a.log.Info("switched name", "from", nameOf(old), "to", pend.Name)
	a.certs.SetFallback(pend.FQDN)
	if old.Valid() && old.FQDN != pend.FQDN {
		a.certs.Unmanage(old.FQDN)
	}
	a.stopTunnel()
	a.triggerPing()
}

func nameOf(r *state.Registration) string {
	if r == nil {
		return ""
	}
	return r.Name
}

// retire unsubscribes the names given up, retrying later on failure.
func (a *Agent) retire(ctx context.Context) {
	a.mu.Lock()
	if len(a.st.Retired) == 0 || time.Now().Before(a.retryRet) {
		a.mu.Unlock()
		return
	}
	retired := append([]state.Registration(nil), a.st.Retired...)
	a.mu.Unlock()
	var keep []state.Registration
	for _, r := range retired {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := a.api.Unsubscribe(cctx, r.Token)
		cancel()
		switch {
		case err == nil:
			a.log.Info("gave the old name up", "name", r.Name)
		case errors.Is(err, cloudapi.ErrTokenRefused):
			// Already gone (expired, reclaimed): nothing left to do.
		default:
			a.log.Warn("giving the old name up failed: will retry", "name", r.Name, "error", err)
			keep = append(keep, r)
		}
	}
	a.mu.Lock()
	// Names retired meanwhile are kept too.
	a.st.Retired = append(keep, a.st.Retired[len(retired):]...)
	if len(keep) > 0 {
		a.retryRet = time.Now().Add(time.Minute)
	}
	err := a.store.Save(a.st)
	a.mu.Unlock()
	if err != nil {
		a.log.Error("saving state", "error", err)
	}
}

// ensureTunnel runs the tunnel client for reg, replacing one for another
// name or token.
func (a *Agent) ensureTunnel(reg *state.Registration) {
	a.mu.Lock()
	if a.tun != nil && a.tun.name == reg.Name && a.tun.c.Token == reg.Token {
		a.mu.Unlock()
		return
	}
	a.mu.Unlock()
	a.stopTunnel()
	c := &client.Client{
		URL:        a.cfg.TunnelURL(),
		Name:       reg.Name,
		Token:      reg.Token,
		Handler:    a.handleStream,
		HTTPClient: a.tunnelHTTP,
		HTTPHeader: http.Header{"User-Agent": {"gatehouse-gateway-agent/" + a.opts.Version}},
		Backoff:    a.opts.TunnelBackoff,
		Logger:     a.log.With("component", "tunnel"),
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := &tunnelRun{name: reg.Name, c: c, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(run.done)
		if err := c.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error("tunnel stopped", "error", err)
		}
	}()
	a.mu.Lock()
	a.tun = run
	a.mu.Unlock()
	a.log.Info("tunnel starting", "name", reg.Name, "url", c.URL)
}

// stopTunnel stops the running tunnel client and waits for it.
func (a *Agent) stopTunnel() {
	a.mu.Lock()
	run := a.tun
	a.tun = nil
	a.mu.Unlock()
	if run == nil {
		return
	}
	run.cancel()
	<-run.done
}

func (a *Agent) localAddrs() ([]netip.Addr, error) {
	if len(a.set.LocalAddrs) > 0 {
		return a.set.LocalAddrs, nil
	}
	return netinfo.LocalAddrs()
}

// doPing reports to the cloud with the current name's token.
func (a *Agent) doPing(ctx context.Context, addrs []netip.Addr) error {
	a.mu.Lock()
	cur := a.st.Current.Clone()
	a.mu.Unlock()
	if !cur.Valid() {
		return errors.New("not registered yet")
	}
	info, err := a.api.Ping(ctx, cur.Token, addrs)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.addrs = addrs
	a.pingErr = err
	if err != nil {
		a.ping.LastError = cloudapi.Explain(err)
		return err
	}
	a.ping.Last = time.Now()
	a.ping.LastError = ""
	a.ping.PublicIP = info.PublicIPv4
	if a.ping.PublicIP == "" {
		a.ping.PublicIP = info.PublicIPv6
	}
	return nil
}

// advertise keeps the mDNS responder in step with the LAN addresses.
func (a *Agent) advertise(ctx context.Context, adv *mdns.Advertiser) {
	defer adv.Close()
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	warned := false
	for {
		addrs, err := a.localAddrs()
		if err == nil {
			err = adv.Update(addrs)
		}
		if err != nil && !warned {
			// Not fatal: the page is still reachable by address.
			a.log.Warn("mDNS advertisement unavailable", "error", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Status implements setupui.Controller.
func (a *Agent) Status() status.Status {
	a.mu.Lock()
	st := a.st.Clone()
	regErr, pingErr := a.regErr, a.pingErr
	ping := a.ping
	addrs := a.addrs
	tun := a.tun
	a.mu.Unlock()

	s := status.Status{Version: a.opts.Version, Updated: time.Now().UTC(), Cloud: a.cfg.Cloud, Email: st.Email, Ping: ping}
	for _, ad := range addrs {
		s.LocalAddrs = append(s.LocalAddrs, ad.String())
	}
	if cur := st.Current; cur.Valid() {
		s.Name, s.FQDN, s.Zone, s.Provisional, s.Mode = cur.Name, cur.FQDN, cur.Zone, cur.Provisional, cur.Mode
		s.URL = "https://" + cur.FQDN + "/"
		cs := a.certs.Status(cur.FQDN)
		s.Certificate = status.Certificate{Ready: cs.Ready, NotAfter: cs.NotAfter, Issuer: cs.Issuer, Obtaining: cs.Obtaining, LastError: cs.LastError}
		if a.cfg.Wildcard {
			s.Certificate.Wildcard = a.certs.Status("local." + cur.FQDN).Ready
		}
		if cs.Ready && a.cfg.HTTPSListen != "" {
			if _, port, err := net.SplitHostPort(a.cfg.HTTPSListen); err == nil {
				host := cur.FQDN
				if s.Certificate.Wildcard {
					host = "local." + cur.FQDN
				}
				s.LANURL = "https://" + net.JoinHostPort(host, port) + "/"
			}
		}
		if !cs.Ready && cs.LastError != "" {
			s.Problems = append(s.Problems, "the certificate cannot be obtained: "+cs.LastError)
		}
	}
	if s.Mode == "" {
		s.Mode = a.cfg.Mode
	}
	if p := st.Pending; p.Valid() {
		s.Pending = p.Name
		ps := a.certs.Status(p.FQDN)
		s.Certificate.PendingReady, s.Certificate.PendingError = ps.Ready, ps.LastError
		if ps.LastError != "" {
			s.Problems = append(s.Problems, "the certificate for "+p.FQDN+" cannot be obtained: "+ps.LastError)
		}
	}
	if tun != nil {
		ts := tun.c.State()
		s.Tunnel = status.Tunnel{Enabled: true, Connected: ts.Connected, Since: ts.Since, Failures: ts.Failures}
		if ts.Connected {
			s.Tunnel.RTT = ts.RTT.Round(time.Millisecond).String()
		}
		if ts.LastError != nil {
			s.Tunnel.LastError = ts.LastError.Error()
		}
		if !ts.Connected && ts.Failures > 0 {
			s.Problems = append(s.Problems, "the tunnel is down: "+s.Tunnel.LastError)
		}
	}
	if tun == nil {
		switch {
		case a.cfg.Mode == registry.ModeDynamic:
			s.Tunnel.Note = "dynamic DNS mode: the name points at the gateway's public address"
		case s.Name == "":
			s.Tunnel.Note = "opens once the gateway is registered"
		default:
			s.Tunnel.Note = "opens once the certificate is there"
		}
	}
	if regErr != nil {
		s.Problems = append(s.Problems, "registration failed: "+cloudapi.Explain(regErr))
	}
	if pingErr != nil {
		s.Problems = append(s.Problems, "the last ping failed: "+cloudapi.Explain(pingErr))
	}
	return s
}

func (a *Agent) statusPath() string { return filepath.Join(a.cfg.StateDir, status.FileName) }

func (a *Agent) saveStatus() {
	if err := a.Status().Save(a.statusPath()); err != nil {
		a.log.Warn("writing the status file", "error", err)
	}
}

// saveStatusIfChanged writes the status file when something other than the
// time changed, and returns what it compared.
func (a *Agent) saveStatusIfChanged(last []byte) []byte {
	s := a.Status()
	cmp := s
	cmp.Updated = time.Time{}
	cmp.Tunnel.RTT = ""
	b, _ := json.Marshal(cmp)
	if string(b) == string(last) {
		return last
	}
	if err := s.Save(a.statusPath()); err != nil {
		a.log.Warn("writing the status file", "error", err)
	}
	return b
}

// ChooseName implements setupui.Controller: subscribe name, then obtain its
// certificate; reconcile switches once it is there.
func (a *Agent) ChooseName(ctx context.Context, name string) error {
	if name == "" {
		return fmt.Errorf("%w: the name is empty", setupui.ErrInput)
	}
	if name == a.currentName() {
		return fmt.Errorf("%w: %s is already this gateway's name", setupui.ErrInput, name)
	}
	a.mu.Lock()
	pending := a.st.Pending.Valid() && a.st.Pending.Name == name
	a.mu.Unlock()
	if pending {
		// Chosen already (a second click, or the setup command after the
		// page): the cloud would call the name taken, by this gateway.
		return nil
	}
	sub, err := a.api.Subscribe(ctx, cloudapi.SubscribeRequest{Name: name, Mode: a.cfg.Mode})
	if err != nil {
		a.log.Info("name refused", "name", name, "error", err)
		return err
	}
	return a.setPending(sub)
}

// Reclaim implements setupui.Controller.
func (a *Agent) Reclaim(ctx context.Context, name, token string) error {
	if name == "" || token == "" {
		return fmt.Errorf("%w: the name and the reclamation token are both needed", setupui.ErrInput)
	}
	sub, err := a.api.Subscribe(ctx, cloudapi.SubscribeRequest{Name: name, ReclamationToken: token, Mode: a.cfg.Mode})
	if err != nil {
		a.log.Info("reclamation refused", "name", name, "error", err)
		return err
	}
	return a.setPending(sub)
}

func (a *Agent) setPending(sub *cloudapi.Subscription) error {
	reg := &state.Registration{Name: sub.Name, Token: sub.Token, FQDN: sub.FQDN, Zone: sub.Zone, Mode: a.cfg.Mode}
	a.mu.Lock()
	if old := a.st.Pending; old.Valid() && old.Name != reg.Name {
		// An earlier choice that never got its certificate.
		a.certs.Unmanage(old.FQDN)
		a.st.Retired = append(a.st.Retired, *old)
	}
	a.st.Pending = reg
	err := a.store.Save(a.st)
	a.mu.Unlock()
	if err != nil {
		return err
	}
	a.log.Info("name chosen: obtaining its certificate", "name", reg.Name, "fqdn", reg.FQDN)
	a.mu.Lock()
	runCtx := a.runCtx
	a.mu.Unlock()
	if err := a.certs.Manage(runCtx, reg.FQDN, reg.Token); err != nil {
		return err
	}
	a.wakeUp()
	return nil
}

// SetEmail implements setupui.Controller.
func (a *Agent) SetEmail(ctx context.Context, email string) error {
	if email == "" {
		return fmt.Errorf("%w: the email is empty", setupui.ErrInput)
	}
	a.mu.Lock()
	cur := a.st.Current.Clone()
	a.mu.Unlock()
	if !cur.Valid() {
		return errors.New("the gateway is not registered yet")
	}
	if err := a.api.SetEmail(ctx, cur.Token, email); err != nil {
		return err
	}
	a.mu.Lock()
	a.st.Email = email
	err := a.store.Save(a.st)
	a.mu.Unlock()
	return err
}

// RequestReclaim implements setupui.Controller.
func (a *Agent) RequestReclaim(ctx context.Context, name string) error {
	if name == "" {
		return fmt.Errorf("%w: the name is empty", setupui.ErrInput)
	}
	return a.api.Reclaim(ctx, name)
}

var _ setupui.Controller = (*Agent)(nil)
