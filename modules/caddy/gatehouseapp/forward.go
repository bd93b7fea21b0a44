package gatehouseapp

import (
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/gatehouse-project/gatehouse/modules/forward"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// ForwardConfig says which gateways may reach services behind which
// others (agent-to-agent forwarding). Without it, every forward is refused.
type ForwardConfig struct {
	// Rules allow gateway From to reach gateway To on Ports (empty: any);
	// "*" matches any gateway. No matching rule denies.
	Rules forward.Rules `json:"rules,omitempty"`
	// OpenTimeout bounds the wait for the target agent's answer (default 10s).
	OpenTimeout caddy.Duration `json:"open_timeout,omitempty"`
}

// provisionForward makes the hub serve the streams agents open toward the
// cloud with the forwarding relay.
func (a *App) provisionForward(logger *slog.Logger) error {
	var cfg ForwardConfig
	if a.Forward != nil {
		cfg = *a.Forward
	}
	if err := cfg.Rules.Validate(); err != nil {
		return err
	}
	a.relay = &forward.Relay{
		Tunnels:     a.hub,
		Rules:       cfg.Rules,
		OpenTimeout: time.Duration(cfg.OpenTimeout),
		Logger:      logger,
		Exists:      a.registry.Exists,
	}
	useRelay(a.hub, a.relay)
	return nil
}

// relays holds, for each shared hub, the relay of the newest App. The hub
// and its sessions outlive a config reload, while the rules and the
// registry the relay checks belong to one App; so the hub's Handler is set
// once, before the hub serves any session (setting it later would race with
// the sessions reading it), and reads the current relay on each stream.
var relays sync.Map // *hub.Hub → *atomic.Pointer[forward.Relay]

// useRelay makes h hand the streams agents open to r from now on.
func useRelay(h *hub.Hub, r *forward.Relay) {
	v, loaded := relays.LoadOrStore(h, new(atomic.Pointer[forward.Relay]))
	cur := v.(*atomic.Pointer[forward.Relay])
	cur.Store(r)
	if !loaded {
		h.SetHandler(func(m tunnel.Meta, st *tunnel.Stream) { cur.Load().Handle(m, st) })
	}
}

// forgetRelay drops h's entry once the hub is closed.
func forgetRelay(h *hub.Hub) { relays.Delete(h) }

// unmarshalCaddyfile reads
//
//	forward {
//		allow <from> <to> [<port>...]
//		open_timeout <duration>
//	}
func (f *ForwardConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch key := d.Val(); key {
		case "allow":
			args := d.RemainingArgs()
			if len(args) < 2 {
				return d.Errf("allow: want <from> <to> [<port>...]")
			}
			r := forward.Rule{From: args[0], To: args[1]}
			for _, p := range args[2:] {
				n, err := strconv.ParseUint(p, 10, 16)
				if err != nil || n == 0 {
					return d.Errf("allow: %q is not a port", p)
				}
				r.Ports = append(r.Ports, uint16(n))
			}
			f.Rules = append(f.Rules, r)
		case "open_timeout":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			f.OpenTimeout = dur
		default:
			return d.Errf("unrecognized forward option %q", key)
		}
	}
	return nil
}
