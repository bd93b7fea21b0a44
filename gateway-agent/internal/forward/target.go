package forward

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/relay"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// Refusal reasons the target sends back in its Ack; the source agent logs
// them (behind the cloud's "refused by GATEWAY: " prefix).
const (
	ReasonNotAllowed   = "destination not in the target gateway's allow-list"
	ReasonNoAddress    = "no destination address"
	ReasonDialFailed   = "destination unreachable"
	ReasonShuttingDown = "target gateway shutting down"
)

// IsForwarding tells the streams another gateway opened toward an internal
// destination from public ingress (see tunnel.MetaFromInitiator, which also
// reads the source gateway from clouds of either protocol version).
func IsForwarding(init tunnel.Initiator) bool { return tunnel.MetaFromInitiator(init).Forwarded() }

// Target serves forwarding streams on the target gateway: it checks its
// allow-list, dials the internal destination, answers the stream's Ack, and
// relays.
type Target struct {
	// Allow is the compiled allow-list (AllowList.Compile); empty denies
	// everything.
	Allow AllowList
	// DialTimeout bounds connecting to the destination. It must stay below
	// the cloud's open_timeout (10s by default) so that the reason, not the
	// cloud's timeout, reaches the source. Default 5s.
	DialTimeout time.Duration
	// Dial connects to the destination; nil means a net.Dialer.
	Dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	Logger *slog.Logger

	// Counters, for the status.
	Accepted, Refused atomic.Uint64
}

// Handle serves one forwarding stream until both directions are done or ctx
// ends. The caller closes st afterwards (client.Client does).
func (t *Target) Handle(ctx context.Context, st *tunnel.Stream) {
	meta := tunnel.MetaFromInitiator(st.Initiator())
	log := t.logger().With("from", meta.Source, "dest", meta.Dest, "client", meta.Client)
	refuse := func(reason string, args ...any) {
		t.Refused.Add(1)
		log.Warn("forward refused", append([]any{"reason", reason}, args...)...)
		_ = st.Ack(false, reason)
	}
	if ctx.Err() != nil {
		refuse(ReasonShuttingDown)
		return
	}
	if !meta.Dest.IsValid() || meta.Dest.Port() == 0 {
		refuse(ReasonNoAddress)
		return
	}
	dest, ok := t.Allow.Check(meta.Source, meta.Dest.Addr(), meta.Dest.Port())
	if !ok {
		refuse(ReasonNotAllowed)
		return
	}
	timeout := t.DialTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	dial := t.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	addr := net.JoinHostPort(dest.String(), strconv.Itoa(int(meta.Dest.Port())))
	conn, err := dial(dctx, "tcp", addr)
	cancel()
	if err != nil {
		refuse(ReasonDialFailed+": "+dialReason(err), "error", err)
		return
	}
	defer conn.Close()
	if err := st.Ack(true, ""); err != nil {
		log.Info("forward abandoned by the source before it opened", "error", err)
		return
	}
	t.Accepted.Add(1)
	log.Info("forward opened")
	start := time.Now()
	res := relay.Conns(ctx, st, conn, relay.Counts{})
	log.Info("forward closed", "bytes_in", res.AToB, "bytes_out", res.BToA, "duration", time.Since(start).Round(time.Millisecond))
}

// dialReason says why a dial failed in a few words: the source gateway
// learns that the destination refused or did not answer, not the target's
// local error text.
func dialReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "connection timed out"
	case isRefused(err):
		return "connection refused"
	}
	return "connection failed"
}

func (t *Target) logger() *slog.Logger {
	if t.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return t.Logger
}
