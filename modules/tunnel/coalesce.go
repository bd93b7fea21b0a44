package tunnel

// Layout of a Data frame as AppendData writes it: the type byte, a fixmap
// of two, "GUID" with a bin8 of 16 bytes, "Data", then the payload's bin8
// or bin16 header.
const (
	dataGUIDOff = 9  // after 0x03 0x82 0xa4 "GUID" 0xc4 0x10
	dataBinOff  = 30 // after the GUID, 0xa4 "Data"
)

// dataPayload returns the payload offset of a frame AppendData wrote, and
// whether b is one (a Data frame with a bin8 or bin16 payload).
func dataPayload(b []byte) (int, bool) {
	if len(b) < dataBinOff+2 || MessageType(b[0]) != TypeData {
		return 0, false
	}
	switch b[dataBinOff] {
	case mpBin8:
		return dataBinOff + 2, true
	case mpBin16:
		return dataBinOff + 3, len(b) >= dataBinOff+3
	}
	return 0, false
}

// coalesce appends the payload of g to f when both are pooled Data frames
// of the same stream and the result still fits a frame, and reports
// whether it did. The writer merges Data that queued up behind a write
// this way, so that a stream written in small pieces (a TLS server's 16 KiB
// records, or smaller at the start of a connection) still crosses the
// tunnel in large frames: one WebSocket message, TLS record and system
// call per 64 KiB instead of per piece. Only g's payload is copied; the
// bytes each stream sends, and so the flow-control accounting, are
// unchanged.
func coalesce(f *outFrame, g outFrame) bool {
	if f.pooled == nil || g.pooled == nil {
		return false
	}
	fo, ok := dataPayload(f.b)
	if !ok {
		return false
	}
	goff, ok := dataPayload(g.b)
	if !ok || [16]byte(f.b[dataGUIDOff:dataGUIDOff+16]) != [16]byte(g.b[dataGUIDOff:dataGUIDOff+16]) {
		return false
	}
	p := g.b[goff:]
	b := f.b
	if fo == dataBinOff+2 {
		// Widen the bin8 header to bin16, moving the (at most 255-byte)
		// payload by one.
		if len(b)+1+len(p) > MaxFrameSize {
			return false
		}
		b = append(b, 0)
		copy(b[fo+1:], b[fo:len(b)-1])
		b[dataBinOff] = mpBin16
		fo++
	}
	if len(b)+len(p) > MaxFrameSize {
		return false
	}
	b = append(b, p...)
	n := len(b) - fo
	b[dataBinOff+1], b[dataBinOff+2] = byte(n>>8), byte(n)
	f.b = b
	// The frame grew within its pooled buffer (the capacity check above),
	// which keeps frameHeadroom in front.
	*f.pooled = (*f.pooled)[:frameHeadroom+len(b)]
	return true
}
