package agent

import (
	"context"
	"time"

	"golang.org/x/sync/errgroup"
)

// stopTimeout bounds the graceful part of stopping (servers draining).
const stopTimeout = 5 * time.Second

// runGroup is everything Run started, and the one place that stops it.
// Stopping cancels first, then runs the stop functions (which end what
// blocks outside the context: servers, the tunnel), then waits: a
// goroutine that ends only on cancel can never be waited for before the
// cancel, whichever way Run returns.
type runGroup struct {
	g      *errgroup.Group
	cancel context.CancelFunc
	stops  []func(context.Context)
}

// newRunGroup returns the group and the context its goroutines live in;
// the context ends when the group stops or one of them fails.
func newRunGroup(parent context.Context) (*runGroup, context.Context) {
	ctx, cancel := context.WithCancel(parent)
	g, ctx := errgroup.WithContext(ctx)
	return &runGroup{g: g, cancel: cancel}, ctx
}

// Go runs f in the group; an error from f stops the agent and is what Run
// returns.
func (r *runGroup) Go(f func() error) { r.g.Go(f) }

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
	return r.g.Wait()
}
