package agent

import (
	"context"
	"errors"
	"net/http"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/forward"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/state"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
)

// tunnelRun is one running tunnel client and how to stop it.
type tunnelRun struct {
	name   string
	c      *client.Client
	cancel context.CancelFunc
	done   chan struct{}
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
