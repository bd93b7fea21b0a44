package tunnel

import (
	"errors"
	"testing"
)

// TestTransitionTable checks every event in every state against the
// stream's rules, written out in full: a change to transition must change
// this table too.
func TestTransitionTable(t *testing.T) {
	const (
		O  = stateOpening
		A  = stateAccepted
		Op = stateOpen
		L  = stateLocalFin
		R  = stateRemoteFin
		F  = stateFinished
		X  = stateReset
		C  = stateClosed
	)
	type want struct {
		next streamState
		err  error // nil: allowed
	}
	states := []streamState{O, A, Op, L, R, F, X, C}
	// One row per event, one column per state in the order above.
	table := map[streamEvent][8]want{
		evAccept: {
			{O, ErrAlreadyAcked}, {Op, nil}, {Op, ErrAlreadyAcked}, {L, ErrAlreadyAcked},
			{R, ErrAlreadyAcked}, {F, ErrAlreadyAcked}, {X, ErrStreamReset}, {C, ErrAlreadyAcked}},
		evRefuse: {
			{O, ErrAlreadyAcked}, {C, nil}, {Op, ErrAlreadyAcked}, {L, ErrAlreadyAcked},
			{R, ErrAlreadyAcked}, {F, ErrAlreadyAcked}, {X, ErrStreamReset}, {C, ErrAlreadyAcked}},
		evAcked: {
			{Op, nil}, {A, ErrProtocol}, {Op, ErrProtocol}, {L, ErrProtocol},
			{R, ErrProtocol}, {F, ErrProtocol}, {X, ErrProtocol}, {C, ErrProtocol}},
		evRefused: {
			{X, nil}, {A, ErrProtocol}, {Op, ErrProtocol}, {L, ErrProtocol},
			{R, ErrProtocol}, {F, ErrProtocol}, {X, ErrProtocol}, {C, ErrProtocol}},
		evCloseWrite: {
			{O, ErrNotAcked}, {A, ErrNotAcked}, {L, nil}, {L, nil},
			{F, nil}, {F, nil}, {X, ErrStreamReset}, {C, ErrStreamClosed}},
		evRecvFin: {
			{X, nil}, {X, nil}, {R, nil}, {F, nil},
			{R, nil}, {F, nil}, {X, nil}, {C, nil}},
		evRecvReset: {
			{X, nil}, {X, nil}, {X, nil}, {X, nil},
			{X, nil}, {F, nil}, {X, nil}, {C, nil}},
		evClose: {
			{C, nil}, {C, nil}, {C, nil}, {C, nil},
			{C, nil}, {C, nil}, {C, nil}, {C, nil}},
	}
	if len(table) != len(eventNames) {
		t.Fatalf("table has %d events, transition knows %d", len(table), len(eventNames))
	}
	for ev, row := range table {
		for i, s := range states {
			w := row[i]
			next, err := transition(s, ev)
			if next != w.next {
				t.Errorf("%v in %v: next %v, want %v", ev, s, next, w.next)
			}
			switch {
			case w.err == nil && err != nil:
				t.Errorf("%v in %v: error %v, want none", ev, s, err)
			case w.err != nil && !errors.Is(err, w.err):
				t.Errorf("%v in %v: error %v, want %v", ev, s, err, w.err)
			case err != nil && next != s:
				t.Errorf("%v in %v: refused but moved to %v", ev, s, next)
			}
		}
	}
	if _, err := transition(stateOpen, streamEvent(200)); err == nil {
		t.Error("unknown event accepted")
	}
}

// The derived predicates agree with the states' meaning.
func TestStatePredicates(t *testing.T) {
	for s := stateOpening; s <= stateClosed; s++ {
		gone := s == stateFinished || s == stateReset || s == stateClosed
		if s.gone() != gone {
			t.Errorf("%v.gone() = %v", s, s.gone())
		}
		est := s == stateOpen || s == stateLocalFin || s == stateRemoteFin || s == stateFinished
		if s.established() != est {
			t.Errorf("%v.established() = %v", s, s.established())
		}
		if s.String() == "" || s.String()[0] == 's' {
			t.Errorf("state %d has no name", s)
		}
	}
}
