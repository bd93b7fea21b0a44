//go:build !unix

package relay

import "io"

// withTry returns w: TryWrite is implemented for unix sockets only.
func withTry(w *errWriter, _ func(int)) io.Writer { return w }

// rawReader returns src: raw reads are for Linux sockets (sockio).
func rawReader(src io.Reader) io.Reader { return src }
