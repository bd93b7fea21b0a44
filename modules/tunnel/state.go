package tunnel

import "fmt"

// streamState is where a stream is in its life. Every change goes through
// transition, so the rules are in one table (state_test.go checks all of
// it) rather than spread over flags.
//
//	Opening ──acked──▶ Open ──closeWrite──▶ LocalFin ──recvFin──▶ Finished
//	Accepted ─accept─▶ Open ──recvFin────▶ RemoteFin ─closeWrite─▶ Finished
//	Opening/Accepted/Open/LocalFin/RemoteFin ──recvReset──▶ Reset
//	any ──close──▶ Closed
//
// Whether the session has ended is not a state of the stream: buffered
// data stays readable after it, and Stream.sessErr says why it ended.
type streamState uint8

const (
	// stateOpening: this side sent the Initiator and waits for the Ack.
	stateOpening streamState = iota
	// stateAccepted: the peer's Initiator arrived; the application has not
	// answered it yet.
	stateAccepted
	// stateOpen: acknowledged; data flows both ways.
	stateOpen
	// stateLocalFin: this side half-closed (CloseWrite): no more writes.
	stateLocalFin
	// stateRemoteFin: the peer half-closed: reads end in EOF.
	stateRemoteFin
	// stateFinished: both sides half-closed; the session forgets the stream.
	stateFinished
	// stateReset: the peer closed the stream entirely, refused it, or
	// withdrew it before it was answered: writes fail, reads end in EOF.
	stateReset
	// stateClosed: closed on this side (Close, a refusal, an abandoned
	// Open). Terminal: its buffer is freed and its waiters released.
	stateClosed
)

var stateNames = [...]string{"opening", "accepted", "open", "local-fin", "remote-fin", "finished", "reset", "closed"}

func (s streamState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("streamState(%d)", s)
}

// gone reports whether the session has no more use for a stream in s:
// frames for it are ignored from now on.
func (s streamState) gone() bool {
	return s == stateFinished || s == stateReset || s == stateClosed
}

// established reports whether the stream was acknowledged and not yet
// closed or reset: the states in which it may carry data one way or both.
func (s streamState) established() bool {
	return s == stateOpen || s == stateLocalFin || s == stateRemoteFin || s == stateFinished
}

// streamEvent is what happens to a stream.
type streamEvent uint8

const (
	// evAccept: the application accepts a stream the peer opened (Ack true).
	evAccept streamEvent = iota
	// evRefuse: the application refuses it (Ack false).
	evRefuse
	// evAcked: the peer accepted a stream this side opened.
	evAcked
	// evRefused: the peer refused it.
	evRefused
	// evCloseWrite: the application half-closes (CloseWrite).
	evCloseWrite
	// evRecvFin: the peer's Terminator with Half set.
	evRecvFin
	// evRecvReset: the peer's Terminator without Half.
	evRecvReset
	// evClose: the application closes the stream, or Open gives up on it.
	evClose
)

var eventNames = [...]string{"accept", "refuse", "acked", "refused", "close-write", "recv-fin", "recv-reset", "close"}

func (e streamEvent) String() string {
	if int(e) < len(eventNames) {
		return eventNames[e]
	}
	return fmt.Sprintf("streamEvent(%d)", e)
}

// transition returns the state after ev happens in s. An event that is not
// allowed in s returns s unchanged and an error for the caller to return:
// ErrAlreadyAcked, ErrNotAcked, ErrStreamReset or ErrStreamClosed for the
// application's events, ErrProtocol for an Ack the peer should not have
// sent. The peer's Terminators are always accepted (a Terminator crossing
// our own close is normal); one that changes nothing leaves s as it is.
func transition(s streamState, ev streamEvent) (streamState, error) {
	switch ev {
	case evAccept, evRefuse:
		switch s {
		case stateAccepted:
			if ev == evAccept {
				return stateOpen, nil
			}
			return stateClosed, nil
		case stateReset:
			return s, ErrStreamReset
		}
		return s, ErrAlreadyAcked
	case evAcked, evRefused:
		if s != stateOpening {
			return s, fmt.Errorf("%w: unexpected ack in state %v", ErrProtocol, s)
		}
		if ev == evAcked {
			return stateOpen, nil
		}
		return stateReset, nil
	case evCloseWrite:
		switch s {
		case stateOpen:
			return stateLocalFin, nil
		case stateRemoteFin:
			return stateFinished, nil
		case stateLocalFin, stateFinished:
			return s, nil // CloseWrite is idempotent
		case stateOpening, stateAccepted:
			return s, ErrNotAcked
		case stateReset:
			return s, ErrStreamReset
		}
		return s, ErrStreamClosed
	case evRecvFin:
		switch s {
		case stateOpen:
			return stateRemoteFin, nil
		case stateLocalFin:
			return stateFinished, nil
		case stateOpening, stateAccepted:
			// Withdrawn before it was answered.
			return stateReset, nil
		}
		return s, nil
	case evRecvReset:
		switch s {
		case stateFinished, stateClosed:
			return s, nil
		}
		return stateReset, nil
	case evClose:
		return stateClosed, nil
	}
	return s, fmt.Errorf("tunnel: unknown stream event %v", ev)
}
