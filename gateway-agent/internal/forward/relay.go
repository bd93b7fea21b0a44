package forward

import (
	"context"
	"io"
	"net"
	"sync"
)

// halfCloser is a connection that can end its sending side alone (TCP and
// tunnel streams).
type halfCloser interface {
	CloseWrite() error
}

// Relay copies between a and b both ways until both directions have ended
// and returns the bytes copied each way. The end of one direction (EOF) is
// passed on as a half-close, so protocols that finish sending before they
// stop reading (ssh's exit status, HTTP/1.0) work. An error in either
// direction, or ctx ending, closes both connections, since the other
// direction would otherwise wait for a peer that is gone. The caller still
// closes a and b afterwards.
func Relay(ctx context.Context, a, b net.Conn) (aToB, bToA int64) {
	stop := context.AfterFunc(ctx, func() { _ = a.Close(); _ = b.Close() })
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { aToB = copyHalf(b, a) })
	bToA = copyHalf(a, b)
	wg.Wait()
	return aToB, bToA
}

// copyHalf copies src to dst, then half-closes dst; on an error it closes
// both.
func copyHalf(dst, src net.Conn) int64 {
	n, err := io.Copy(dst, src)
	if err != nil {
		_ = dst.Close()
		_ = src.Close()
		return n
	}
	if hc, ok := dst.(halfCloser); ok {
		if hc.CloseWrite() == nil {
			return n
		}
	}
	// Without a half-close the only way to tell the peer is to close.
	_ = dst.Close()
	return n
}
