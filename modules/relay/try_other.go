//go:build !unix

package relay

import "io"

// withTry returns w: TryWrite is implemented for unix sockets only.
func withTry(w *errWriter) io.Writer { return w }
