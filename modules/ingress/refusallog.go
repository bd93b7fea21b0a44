package ingress

import (
	"sync"
	"time"

	"go.uber.org/zap"
)

// refusalLog rate-limits the log of refused connections: a flood of
// refusals must not become a flood of log lines (one line each once made
// 49,000 lines in 45 s). Per reason it writes at most one line per
// interval: the first refusal after a quiet interval is logged at once
// with its details, and the ones that follow within the interval are only
// counted and reported, as a total, on the next line for that reason. The
// counter metric has every refusal. It needs no goroutine: a count left
// when refusals stop is reported with the next one (the metric is exact
// meanwhile).
type refusalLog struct {
	logger   *zap.Logger
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex
	reasons map[string]*reasonLog
}

type reasonLog struct {
	last       time.Time // when the last line for the reason was written
	suppressed int       // refusals since then, not logged
}

func newRefusalLog(logger *zap.Logger, interval time.Duration, now func() time.Time) *refusalLog {
	return &refusalLog{logger: logger, interval: interval, now: now, reasons: make(map[string]*reasonLog)}
}

// refused records one refusal; fields describe it (gateway, remote, error)
// and are logged only if this refusal gets a line.
func (l *refusalLog) refused(reason string, fields ...zap.Field) {
	now := l.now()
	l.mu.Lock()
	r := l.reasons[reason]
	if r == nil {
		r = &reasonLog{}
		l.reasons[reason] = r
	}
	if !r.last.IsZero() && now.Sub(r.last) < l.interval {
		r.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := r.suppressed
	since := r.last
	r.last, r.suppressed = now, 0
	l.mu.Unlock()

	fields = append(fields, zap.String("reason", reason))
	if suppressed > 0 {
		fields = append(fields, zap.Int("more_refused_unlogged", suppressed), zap.Time("unlogged_since", since))
	}
	l.logger.Info("ingress connection refused (at most one line per reason per interval; see gatehouse_ingress_refused_total)",
		append(fields, zap.Duration("interval", l.interval))...)
}
