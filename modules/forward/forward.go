// Package forward is the cloud's side of agent-to-agent port forwarding:
// it decides whether one gateway may reach a destination behind another
// (the operator's rules), opens the stream on the target gateway's tunnel,
// and relays between the two sessions. The target agent applies its own
// allow-list of internal destinations; this package never dials anything.
//
// It is not a proxy for the public: only registered agents, authenticated
// by their tunnel, open forwarded streams.
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/relay"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// Rule allows the gateways matching From to reach those matching To, on
// Ports (empty: any port). "*" matches every gateway.
type Rule struct {
	From  string   `json:"from"`
	To    string   `json:"to"`
	Ports []uint16 `json:"ports,omitempty"`
}

// Rules are checked in order; no match denies.
type Rules []Rule

// Allows reports whether from may reach port on to.
func (rs Rules) Allows(from, to string, port uint16) bool {
	for _, r := range rs {
		if match(r.From, from) && match(r.To, to) && (len(r.Ports) == 0 || slices.Contains(r.Ports, port)) {
			return true
		}
	}
	return false
}

func match(pattern, name string) bool { return pattern == "*" || strings.EqualFold(pattern, name) }

// Validate rejects rules that can never match.
func (rs Rules) Validate() error {
	for i, r := range rs {
		if r.From == "" || r.To == "" {
			return fmt.Errorf("forward rule %d: from and to are required (\"*\" for any gateway)", i)
		}
		if slices.Contains(r.Ports, 0) {
			return fmt.Errorf("forward rule %d: port 0", i)
		}
	}
	return nil
}

// Sessions finds live tunnel sessions by gateway name (the hub).
type Sessions interface {
	Lookup(name string) (*tunnel.Session, bool)
}

// Refusal reasons, sent to the initiating agent in its Ack.
const (
	ReasonDenied         = tunnel.ReasonForwardDenied
	ReasonUnknownGateway = tunnel.ReasonForwardUnknownGateway
	ReasonOffline        = tunnel.ReasonForwardOffline
	ReasonBadRequest     = tunnel.ReasonForwardBadRequest
)

// Relay serves the streams agents open toward the cloud.
type Relay struct {
	Sessions Sessions
	Rules    Rules
	// Exists says whether a gateway is registered, to tell an unknown
	// gateway from an offline one.
	Exists func(ctx context.Context, name string) (bool, error)
	// OpenTimeout bounds the wait for the target agent's Ack (default 10s).
	OpenTimeout time.Duration
	Logger      *slog.Logger

	// Counters for metrics.
	Opened, Refused atomic.Uint64
	BytesUp         atomic.Uint64 // initiator to target
	BytesDown       atomic.Uint64 // target to initiator
}

// Handle serves one stream that gateway from opened: it answers the
// stream's Ack (refusing with a reason, or accepting once the target has
// accepted) and relays until both directions end. It is the hub's Handler.
func (r *Relay) Handle(from string, st *tunnel.Stream) {
	init := st.Initiator()
	to := strings.ToLower(init.Gatename)
	log := r.logger().With("from", from, "to", to, "port", init.Port)
	refuse := func(reason string) {
		r.Refused.Add(1)
		log.Info("forward refused", "reason", reason)
		_ = st.Ack(false, reason)
	}
	if to == "" || init.Port == 0 {
		refuse(ReasonBadRequest)
		return
	}
	if !r.Rules.Allows(from, to, init.Port) {
		refuse(ReasonDenied)
		return
	}
	target, ok := r.Sessions.Lookup(to)
	if !ok {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		exists, err := r.Exists(ctx, to)
		cancel()
		if err == nil && !exists {
			refuse(ReasonUnknownGateway)
		} else {
			refuse(ReasonOffline)
		}
		return
	}
	timeout := r.OpenTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	// The target learns who is asking (Source, which only the cloud
	// fills; a Source the agent claimed is ignored) so its allow-list can
	// take it into account. The session tells agents older than
	// tunnel.VersionSource in Gatename instead.
	out, err := target.Open(ctx, tunnel.Initiator{Ip: init.Ip, Port: init.Port, Gatename: to, Source: from, ClientAddr: init.ClientAddr})
	cancel()
	if err != nil {
		var refused *tunnel.RefusedError
		if errors.As(err, &refused) {
			refuse(tunnel.RefusedBy(to, refused.Reason))
		} else {
			refuse(ReasonOffline + ": " + err.Error())
		}
		return
	}
	defer out.Close()
	if err := st.Ack(true, ""); err != nil {
		return
	}
	r.Opened.Add(1)
	log.Info("forward opened")
	// Flow control is end to end: each stream's credit window stops the
	// copy when the far reader is slow.
	relay.Conns(context.Background(), st, out, relay.Counts{
		AToB: func(n int) { r.BytesUp.Add(uint64(n)) },
		BToA: func(n int) { r.BytesDown.Add(uint64(n)) },
	})
}

func (r *Relay) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}
