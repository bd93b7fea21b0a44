package gatehouseapp

import (
	"log/slog"
	"net"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"

	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// hubs holds the hub of live tunnel sessions of each zone across config
// reloads. Caddy provisions and starts a new App before it stops the old
// one; if each App had its own hub, every reload would close every tunnel
// and every relay in flight over them. With the pool, the new App takes
// the hub that the old one still holds, and the hub closes (telling agents
// that the cloud shuts down) only when the last App holding it lets go.
var hubs = caddy.NewUsagePool()

// sharedHub wraps a hub so that the usage pool closes it on last release.
type sharedHub struct{ *hub.Hub }

// Destruct implements caddy.Destructor.
func (s sharedHub) Destruct() error {
	forgetRelay(s.Hub)
	return s.Close()
}

func hubKey(zone string) string { return "gatehouse/hub/" + zone }

// acquireHub returns the zone's hub, creating it for the first App, and
// counts this App as one of its holders until releaseHub.
func (a *App) acquireHub(logger *slog.Logger) *hub.Hub {
	v, _, _ := hubs.LoadOrNew(hubKey(a.Zone), func() (caddy.Destructor, error) {
		return sharedHub{&hub.Hub{Logger: logger}}, nil
	})
	key := hubKey(a.Zone)
	hubReleases.Store(a, sync.OnceValue(func() error {
		_, err := hubs.Delete(key)
		return err
	}))
	return v.(sharedHub).Hub
}

// hubReleases maps each App that holds a hub to the function that lets go
// of it once (kept here rather than in App so that app.go stays as it is).
var hubReleases sync.Map // *App → func() error

// releaseHub lets go of the hub; the last holder closes it. It is called
// from Stop, and from Cleanup for an App that failed to provision (and so
// is never stopped); only the first call counts.
func (a *App) releaseHub() error {
	release, ok := hubReleases.LoadAndDelete(a)
	if !ok {
		return nil
	}
	return release.(func() error)()
}

// Hub returns the live tunnel sessions, for the listener wrapper that
// relays ingress connections down them. It is the same hub across config
// reloads of the same zone.
func (a *App) Hub() *hub.Hub { return a.hub }

// GatewayName returns the gateway that host (a TLS server name or an HTTP
// Host, with or without port) belongs to: NAME for NAME.ZONE and for any
// name below it (a.b.NAME.ZONE), compared case-insensitively. ok is false
// for the zone itself, names outside it, and labels that no gateway can
// hold (api, www, ns1, ... and the configured reserved names), so that the
// cloud's own sites are never taken for a gateway.
func (a *App) GatewayName(host string) (name string, ok bool) {
	return gatewayName(host, a.Zone, func(n string) bool {
		return a.registry == nil || a.registry.Names().Check(n) == nil
	})
}

// gatewayName is GatewayName with the zone and the name check as arguments.
func gatewayName(host, zone string, valid func(string) bool) (string, bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	zone = strings.ToLower(strings.TrimSuffix(zone, "."))
	if zone == "" || !strings.HasSuffix(host, "."+zone) {
		return "", false
	}
	rest := strings.TrimSuffix(host, "."+zone)
	name := rest[strings.LastIndexByte(rest, '.')+1:]
	if name == "" || !valid(name) {
		return "", false
	}
	return name, true
}
