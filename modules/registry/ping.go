package registry

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// MaxLocalAddrs bounds how many LAN addresses one gateway may report.
const MaxLocalAddrs = 8

type pendingPing struct {
	ctx  context.Context
	req  PingRequest
	done chan PingResult
}

// Ping records that the gateway owning token is alive, seen from public,
// with the given LAN addresses (nil keeps the stored ones). Pings from many
// gateways are committed together (group commit), so one database
// transaction serves many requests while each still returns only once its
// own write is durable.
func (r *Registry) Ping(ctx context.Context, token string, public netip.Addr, local []netip.Addr) (*Gateway, error) {
	if CheckTokenSyntax(token) != nil {
		return nil, ErrNotFound
	}
	if len(local) > MaxLocalAddrs {
		return nil, fmt.Errorf("%w: at most %d local addresses", ErrInvalidInput, MaxLocalAddrs)
	}
	g, err := r.submitPing(ctx, r.pingRequest(HashToken(token), public, local))
	if err == nil {
		r.ensureSealed(ctx, g, token)
	}
	return g, err
}

// ErrStopped is returned by pings once the registry is stopped.
var ErrStopped = errors.New("registry stopped")

// TunnelAlive records, as a ping from public would, that gateway name has
// a live tunnel: the cloud calls it for every live tunnel more often than
// ExpireAfter, so that a gateway stays registered while connected even if
// it never pings (a PageKite kite does not). It goes through the same
// group commit as Ping. An expired gateway is not brought back (its
// tunnel was dropped with it; it must ping): that gives ErrExpired.
func (r *Registry) TunnelAlive(ctx context.Context, name string, public netip.Addr) (*Gateway, error) {
	g, err := r.store.Gateway(ctx, name)
	if err != nil {
		return nil, err
	}
	if g.Expired {
		return nil, fmt.Errorf("%w: %s", ErrExpired, name)
	}
	return r.submitPing(ctx, r.pingRequest(g.TokenHash, public, nil))
}

func (r *Registry) pingRequest(hash []byte, public netip.Addr, local []netip.Addr) PingRequest {
	req := PingRequest{TokenHash: hash, At: r.now().UTC(), LocalAddrs: local}
	public = public.Unmap()
	switch {
	case public.Is4():
		req.PublicV4 = public
	case public.Is6():
		req.PublicV6 = public
	}
	return req
}

// submitPing hands req to the group commit and waits for its result.
func (r *Registry) submitPing(ctx context.Context, req PingRequest) (*Gateway, error) {
	p := &pendingPing{ctx: ctx, req: req, done: make(chan PingResult, 1)}
	select {
	case r.pings <- p:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-r.stop:
		return nil, ErrStopped
	}
	select {
	case res := <-p.done:
		return res.Gateway, res.Err
	case <-ctx.Done():
		// The write may still land; that is harmless for a ping.
		return nil, ctx.Err()
	}
}

func (r *Registry) pingLoop() {
	batch := make([]*pendingPing, 0, r.cfg.PingBatch)
	reqs := make([]PingRequest, 0, r.cfg.PingBatch)
	for {
		batch, reqs = batch[:0], reqs[:0]
		select {
		case p := <-r.pings:
			batch = append(batch, p)
		case <-r.stop:
			return
		}
	drain:
		for len(batch) < r.cfg.PingBatch {
			select {
			case p := <-r.pings:
				batch = append(batch, p)
			default:
				break drain
			}
		}
		live := batch[:0]
		for _, p := range batch {
			if p.ctx.Err() != nil {
				p.done <- PingResult{Err: p.ctx.Err()}
				continue
			}
			live = append(live, p)
			reqs = append(reqs, p.req)
		}
		if len(live) == 0 {
			continue
		}
		// The batch outlives any single caller's context: one client
		// hanging up must not roll back its neighbours' pings.
		results := r.store.PingBatch(context.Background(), reqs)
		for i, p := range live {
			res := results[i]
			if res.Err == nil && res.Gateway.Disabled {
				// The ping is recorded (the operator sees the gateway is
				// alive) but answered with the refusal, and observers
				// keep the name out of DNS.
				res = PingResult{Err: fmt.Errorf("%w: %s", ErrDisabled, res.Gateway.Name)}
			} else if res.Err == nil {
				r.emitPing(res)
			}
			p.done <- res
		}
	}
}

// emitPing tells observers the gateway's state after a ping. Observers
// compare it with what they hold, so an unchanged ping costs them a lookup.
func (r *Registry) emitPing(res PingResult) {
	if res.WasExpired {
		// Observers dropped the expired gateway; they need all of it back.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.emitRecords(ctx, GatewaySubtree(res.Gateway.Name)); err == nil {
			return
		}
	}
	r.emit(Event{Subtree: GatewaySubtree(res.Gateway.Name), Gateway: res.Gateway})
}
