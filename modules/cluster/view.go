package cluster

import (
	"slices"
	"strings"
	"sync"
	"time"
)

// member is a node in the view, with the local monotonic time at which
// its lease runs out (the database's remaining lease counted down here).
type member struct {
	Node
	deadline time.Time
}

// view is a member's in-memory picture of the cluster: the nodes and the
// directory. Entries of a node whose deadline has passed are kept until
// the node's departure is heard, but never shown.
type view struct {
	mu      sync.RWMutex
	members map[string]member
	// tunnels maps a gateway to the nodes that hold it; byNode is the
	// reverse, to drop a departed node's entries at once.
	tunnels map[string]map[string]struct{}
	byNode  map[string]map[string]struct{}
	// epoch counts joins and departures heard, so that a reload of the
	// node list read before one of them does not undo it.
	epoch uint64
}

func (v *view) init() {
	v.members = make(map[string]member)
	v.tunnels = make(map[string]map[string]struct{})
	v.byNode = make(map[string]map[string]struct{})
}

func (v *view) live(name string, now time.Time) (member, bool) {
	mb, ok := v.members[name]
	return mb, ok && now.Before(mb.deadline)
}

func (v *view) nodes(now time.Time) []Node {
	v.mu.RLock()
	out := make([]Node, 0, len(v.members))
	for _, mb := range v.members {
		if now.Before(mb.deadline) {
			out = append(out, mb.Node.clone())
		}
	}
	v.mu.RUnlock()
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (v *view) node(name string, now time.Time) (Node, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	mb, ok := v.live(name, now)
	if !ok {
		return Node{}, false
	}
	return mb.Node.clone(), true
}

func (v *view) holders(gateway string, now time.Time) []Node {
	v.mu.RLock()
	var out []Node
	for name := range v.tunnels[gateway] {
		if mb, ok := v.live(name, now); ok {
			out = append(out, mb.Node.clone())
		}
	}
	v.mu.RUnlock()
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (v *view) directory(now time.Time) map[string][]string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make(map[string][]string)
	for gateway, nodes := range v.tunnels {
		for name := range nodes {
			if _, ok := v.live(name, now); ok {
				out[gateway] = append(out[gateway], name)
			}
		}
		slices.Sort(out[gateway])
	}
	return out
}

func (v *view) heldCounts(now time.Time) map[string]int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make(map[string]int)
	for name := range v.members {
		if _, ok := v.live(name, now); ok {
			out[name] = len(v.byNode[name])
		}
	}
	return out
}

// nextDeadline is the earliest deadline after now, or zero.
func (v *view) nextDeadline(now time.Time) time.Time {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var next time.Time
	for _, mb := range v.members {
		if mb.deadline.After(now) && (next.IsZero() || mb.deadline.Before(next)) {
			next = mb.deadline
		}
	}
	return next
}

func (v *view) getEpoch() uint64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.epoch
}

// setMembers replaces the node list with one read from the database,
// unless a join or departure was heard since epoch (when read).
func (v *view) setMembers(ms []member, epoch uint64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.epoch != epoch {
		return false
	}
	v.members = make(map[string]member, len(ms))
	for _, mb := range ms {
		v.members[mb.Name] = mb
	}
	return true
}

// replace installs a full snapshot: nodes and directory.
func (v *view) replace(ms []member, entries [][2]string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.epoch++
	v.members = make(map[string]member, len(ms))
	for _, mb := range ms {
		v.members[mb.Name] = mb
	}
	v.tunnels = make(map[string]map[string]struct{})
	v.byNode = make(map[string]map[string]struct{})
	for _, e := range entries {
		v.add(e[0], e[1])
	}
}

func (v *view) add(gateway, node string) {
	set := v.tunnels[gateway]
	if set == nil {
		set = make(map[string]struct{}, 1)
		v.tunnels[gateway] = set
	}
	set[node] = struct{}{}
	back := v.byNode[node]
	if back == nil {
		back = make(map[string]struct{})
		v.byNode[node] = back
	}
	back[gateway] = struct{}{}
}

func (v *view) remove(gateway, node string) {
	if set := v.tunnels[gateway]; set != nil {
		delete(set, node)
		if len(set) == 0 {
			delete(v.tunnels, gateway)
		}
	}
	if back := v.byNode[node]; back != nil {
		delete(back, gateway)
		if len(back) == 0 {
			delete(v.byNode, node)
		}
	}
}

// dropEntries removes every directory entry of node.
func (v *view) dropEntries(node string) {
	for gateway := range v.byNode[node] {
		if set := v.tunnels[gateway]; set != nil {
			delete(set, node)
			if len(set) == 0 {
				delete(v.tunnels, gateway)
			}
		}
	}
	delete(v.byNode, node)
}

// apply plays one announced change, received at now, onto the view.
// Changes arrive in commit order, and each is idempotent, so replaying
// one the snapshot already contains is harmless.
func (v *view) apply(ev event, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch ev.Kind {
	case kindJoin:
		// A node (re)joining starts with an empty share of the
		// directory: its previous incarnation's tunnels are gone.
		v.epoch++
		v.dropEntries(ev.Node)
		v.members[ev.Node] = member{
			Node:     Node{Name: ev.Node, PublicAddrs: ev.addrs(), LinkAddr: ev.Link},
			deadline: now.Add(time.Duration(ev.LeaseMS) * time.Millisecond),
		}
	case kindLeave:
		v.epoch++
		v.dropEntries(ev.Node)
		delete(v.members, ev.Node)
	case kindDir:
		for _, g := range ev.Hold {
			v.add(g, ev.Node)
		}
		for _, g := range ev.Release {
			v.remove(g, ev.Node)
		}
	}
}
