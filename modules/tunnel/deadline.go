package tunnel

import (
	"sync"
	"time"
)

// deadline turns a net.Conn deadline into a channel that is closed when the
// deadline passes, so that a blocked Read or Write can select on it alongside
// data and close events. Setting a new deadline re-arms it.
type deadline struct {
	mu      sync.Mutex
	timer   *time.Timer
	expired chan struct{} // created lazily: most streams never set deadlines
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		// The timer fired; wait until its function has closed the channel
		// so that the state below is settled.
		<-d.expired
	}
	d.timer = nil
	if d.expired == nil {
		d.expired = make(chan struct{})
	}
	closed := isClosed(d.expired)
	if t.IsZero() {
		if closed {
			d.expired = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.expired = make(chan struct{})
		}
		ch := d.expired
		d.timer = time.AfterFunc(dur, func() { close(ch) })
		return
	}
	if !closed {
		close(d.expired)
	}
}

// wait returns a channel closed once the deadline has passed.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.expired == nil {
		d.expired = make(chan struct{})
	}
	return d.expired
}

// passed reports whether the deadline has passed.
func (d *deadline) passed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.expired != nil && isClosed(d.expired)
}

// stop releases the timer of a stream that is closing.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
