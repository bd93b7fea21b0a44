package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/localapi"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/mdns"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/setupcode"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/setupui"
)

// startServers starts the LAN servers in rg: the setup page (advertised
// with mDNS), the LAN HTTPS port, the configured forwardings and the local
// API. They come before the registration, so the setup page shows what
// happens while the agent registers. Whatever it started before an error
// is stopped by rg.
func (a *Agent) startServers(ctx context.Context, rg *runGroup) error {
	if a.cfg.SetupListen != "" {
		ln, err := net.Listen("tcp", a.cfg.SetupListen)
		if err != nil {
			return fmt.Errorf("setup page: %w", err)
		}
		// The code is shown here, in the log, and by the status command:
		// on the device, never on the LAN.
		code, err := setupcode.LoadOrCreate(a.cfg.StateDir)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("setup page: %w", err)
		}
		srv := &http.Server{Handler: setupui.New(a, setupcode.NewChecker(code), a.log.With("component", "setup")), ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelDebug)}
		rg.Go(func() error { return serveHTTP("setup page", srv, ln) })
		rg.OnStop(func(ctx context.Context) { _ = srv.Shutdown(ctx) })
		a.log.Info("setup page listening", "addr", ln.Addr().String(), "setup_code", setupcode.Format(code))
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
		srv := &http.Server{Handler: localapi.New(key, a.forwards, a.log.With("component", "api")).WithStatus(a.Status), ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelDebug)}
		rg.Go(func() error { return serveHTTP("local api", srv, ln) })
		rg.OnStop(func(ctx context.Context) { _ = srv.Shutdown(ctx) })
		a.log.Info("local api listening", "addr", ln.Addr().String())
	}

	return nil
}

// serveHTTP serves srv on ln until it is shut down; any other end is an
// error that stops the agent.
func serveHTTP(what string, srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
