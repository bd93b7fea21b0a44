package registry

import (
	"context"
	"time"
)

func (r *Registry) sweepLoop() {
	t := time.NewTicker(r.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), r.cfg.SweepInterval)
			_ = r.Sweep(ctx)
			cancel()
		}
	}
}

// Sweep expires the gateways silent for longer than ExpireAfter (they lose
// their addresses, tunnels and custom domains, not their names) and prunes challenge
// values that were never cleaned up, the zone's own included.
func (r *Registry) Sweep(ctx context.Context) error {
	now := r.now()
	if r.cfg.ExpireAfter > 0 {
		names, err := r.store.ExpireSilent(ctx, now.Add(-r.cfg.ExpireAfter))
		if err != nil {
			return err
		}
		for _, n := range names {
			// An expired gateway's custom domains are given up: its
			// owner may point them elsewhere. A failure here is caught
			// by the domains' next recheck, which drops them too.
			_ = r.store.ReleaseDomain(ctx, n, "")
			g, err := r.store.Gateway(ctx, n)
			if err != nil {
				continue
			}
			r.emit(Event{Subtree: GatewaySubtree(n), Gateway: g, Revoked: true})
		}
	}
	pruned, err := r.store.PruneRecords(ctx, "_acme-challenge", "TXT", now.Add(-r.cfg.ChallengeLifetime))
	if err != nil {
		return err
	}
	for _, s := range pruned {
		// A gateway removed meanwhile has nothing left to announce.
		_ = r.emitRecords(ctx, s)
	}
	return nil
}
