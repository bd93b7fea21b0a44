package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/pinger"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/state"
)

// stopTimeout bounds the graceful part of stopping (servers draining).
const stopTimeout = 5 * time.Second

// runGroup is everything Run started, and the one place that stops it.
// Stopping cancels first, then runs the stop functions (which end what
// blocks outside the context: servers, the tunnel), then waits: a
// goroutine that ends only on cancel can never be waited for before the
// cancel, whichever way Run returns. It is errgroup.WithContext plus the
// stop functions, without the dependency.
type runGroup struct {
	wg     sync.WaitGroup
	cancel context.CancelFunc
	once   sync.Once
	err    error // the first goroutine's error; read after wg.Wait
	stops  []func(context.Context)
}

// newRunGroup returns the group and the context its goroutines live in;
// the context ends when the group stops or one of them fails.
func newRunGroup(parent context.Context) (*runGroup, context.Context) {
	ctx, cancel := context.WithCancel(parent)
	return &runGroup{cancel: cancel}, ctx
}

// Go runs f in the group; an error from f stops the agent and is what Run
// returns.
func (r *runGroup) Go(f func() error) {
	r.wg.Go(func() {
		if err := f(); err != nil {
			r.once.Do(func() {
				r.err = err
				r.cancel()
			})
		}
	})
}

// OnStop adds f to what Stop runs after the cancel; they run in reverse
// order of registration, so what started last stops first.
func (r *runGroup) OnStop(f func(context.Context)) { r.stops = append(r.stops, f) }

// Stop cancels, stops, waits, and returns the first goroutine's error.
func (r *runGroup) Stop() error {
	r.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	for i := len(r.stops) - 1; i >= 0; i-- {
		r.stops[i](ctx)
	}
	r.wg.Wait()
	return r.err
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

	if err := a.startServers(ctx, rg); err != nil {
		return err
	}
	if err := a.register(ctx); err != nil {
		return err
	}
	if ctx.Err() != nil {
		// Stopped while registering, or a server failed: the group's
		// error, if any, is what Run returns.
		return nil
	}
	if err := a.manageCertificates(ctx); err != nil {
		return err
	}
	rg.Go(func() error { a.proxy.RunHealthChecks(ctx, time.Duration(a.cfg.UpstreamHealthInterval)); return nil })
	rg.Go(func() error { a.runDomains(ctx); return nil })

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
