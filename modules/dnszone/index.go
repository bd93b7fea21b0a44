package dnszone

import (
	"cmp"
	"hash/maphash"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/miekg/dns"
)

// numShards splits the index so that a writer only ever blocks the readers
// of one shard, for the time of one map assignment.
const numShards = 64

// Index holds what DNS answers for every live gateway, in memory, in a
// compact form: a typical gateway (tunnel mode, one LAN IPv4 address, no
// records) costs one map slot of 40 bytes plus its name, and no pointer.
// Everything else lives in an immutable extra that readers use without a
// lock. Safe for concurrent use.
type Index struct {
	seed   maphash.Seed
	shards [numShards]shard
	serial atomic.Uint32
	n      atomic.Int64
	// zone holds the records of the zone's own subtree (Apply), nil
	// without any.
	zone atomic.Pointer[extra]
}

type shard struct {
	mu sync.RWMutex
	m  map[string]entry
	// pad keeps two shards' locks off one cache line, so that readers of
	// different shards do not slow each other down.
	_ [64]byte
}

// entry is one gateway: its name is the map key. Values are copied out
// under the read lock; ext is never modified after it is stored.
type entry struct {
	pub4  [4]byte
	loc4  [4]byte
	flags uint8
	ext   *extra
}

const (
	flagTunnel uint8 = 1 << iota
	flagPub4
	flagLoc4
)

// extra holds the less common parts of a gateway.
type extra struct {
	pub6 netip.Addr
	// local holds every LAN address when they are not exactly one IPv4
	// address (that one lives in entry.loc4).
	local []netip.Addr
	// recs are sorted by owner then type, in the order given otherwise.
	recs []record
}

// record is one registry.Record, checked and in wire-ready form.
type record struct {
	// owner is relative to NAME.ZONE, lower case, "" for NAME itself.
	owner string
	rtype uint16
	// ttl is in seconds, 0 when the record has none.
	ttl uint32
	// data: A and AAAA the 4 or 16 address bytes, TXT the text, CNAME the
	// canonical target.
	data string
}

// NewIndex returns an empty index whose SOA serial starts at the current
// Unix time, so that it moves forward across restarts.
func NewIndex() *Index {
	x := &Index{seed: maphash.MakeSeed()}
	for i := range x.shards {
		x.shards[i].m = make(map[string]entry)
	}
	x.serial.Store(uint32(time.Now().Unix()))
	return x
}

// Put adds or replaces the whole state of g: its addresses and all its
// records (recs, every owner). An expired gateway is removed, since it
// answers NXDOMAIN like an unknown one. The serial moves only when what DNS
// answers changes, so that the periodic pings of gateways do not churn it.
// Names that cannot be a single DNS label, and records that cannot be
// answered (unknown type, unparsable value, an A/AAAA/CNAME where the
// gateway's own addresses are answered), are skipped.
func (x *Index) Put(g *registry.Gateway, recs []registry.Record) {
	if g == nil {
		return
	}
	name, ok := gatewayLabel(g.Name)
	if !ok {
		return
	}
	if g.Expired || g.Disabled {
		x.Remove(name)
		return
	}
	x.store(name, makeEntry(g, recs), false)
}

// store puts e under name, keeping the records already held when
// keepRecords; the serial moves only when the answers change.
func (x *Index) store(name string, e entry, keepRecords bool) {
	s := x.shard(name)
	s.mu.Lock()
	old, existed := s.m[name]
	if keepRecords && existed {
		if rs := old.recs(); len(rs) > 0 {
			ext := extra{recs: rs}
			if e.ext != nil {
				ext.pub6, ext.local = e.ext.pub6, e.ext.local
			}
			e.ext = &ext
		}
	}
	if existed && old.equal(e) {
		s.mu.Unlock()
		return
	}
	s.m[strings.Clone(name)] = e
	s.mu.Unlock()
	if !existed {
		x.n.Add(1)
	}
	x.bump()
}

// Remove deletes the named gateway, if present.
func (x *Index) Remove(name string) {
	name, ok := gatewayLabel(name)
	if !ok {
		return
	}
	s := x.shard(name)
	s.mu.Lock()
	_, existed := s.m[name]
	delete(s.m, name)
	s.mu.Unlock()
	if existed {
		x.n.Add(-1)
		x.bump()
	}
}

// Len returns the number of gateways indexed (expired ones are not).
func (x *Index) Len() int { return int(x.n.Load()) }

// Serial returns the current SOA serial.
func (x *Index) Serial() uint32 { return x.serial.Load() }

// bump advances the serial by one, or to the current Unix time when that is
// ahead (RFC 1982 arithmetic), so the serial tracks the clock when changes
// are rare and still increases when they come faster than once a second.
func (x *Index) bump() {
	now := uint32(time.Now().Unix())
	for {
		old := x.serial.Load()
		next := old + 1
		if int32(now-next) > 0 {
			next = now
		}
		if x.serial.CompareAndSwap(old, next) {
			return
		}
	}
}

func (x *Index) shard(name string) *shard {
	return &x.shards[maphash.String(x.seed, name)%numShards]
}

// get returns the named gateway; name must be lower case.
func (x *Index) get(name string) (entry, bool) {
	s := x.shard(name)
	s.mu.RLock()
	e, ok := s.m[name]
	s.mu.RUnlock()
	return e, ok
}

// forEach calls fn for every gateway, one shard at a time, from a copy of
// the shard, so that a slow fn (a zone transfer writing to the network)
// never holds a lock. It stops when fn returns false.
func (x *Index) forEach(fn func(name string, e entry) bool) {
	type kv struct {
		name string
		e    entry
	}
	var buf []kv
	for i := range x.shards {
		s := &x.shards[i]
		s.mu.RLock()
		buf = buf[:0]
		for k, v := range s.m {
			buf = append(buf, kv{k, v})
		}
		s.mu.RUnlock()
		for _, it := range buf {
			if !fn(it.name, it.e) {
				return
			}
		}
	}
}

// gatewayLabel returns name lower-cased, if it can be one DNS label.
func gatewayLabel(name string) (string, bool) {
	if name == "" || len(name) > 63 || strings.ContainsAny(name, `.\ `) {
		return "", false
	}
	return strings.ToLower(name), true
}

func makeEntry(g *registry.Gateway, recs []registry.Record) entry {
	// The extra is allocated only when needed: most gateways have none.
	var (
		e     entry
		pub6  netip.Addr
		local []netip.Addr
		rs    []record
	)
	if g.Mode == registry.ModeDynamic {
		// A tunnel-mode gateway answers the tunnel addresses: its public
		// addresses are not stored at all.
		if a := g.PublicV4.Unmap(); a.Is4() {
			e.pub4 = a.As4()
			e.flags |= flagPub4
		}
		if a := g.PublicV6; a.Is6() && !a.Is4In6() {
			pub6 = a.WithZone("")
		}
	} else {
		// Tunnel is the default mode, also for an unset one.
		e.flags |= flagTunnel
	}
	if len(g.LocalAddrs) == 1 && g.LocalAddrs[0].Unmap().Is4() {
		e.loc4 = g.LocalAddrs[0].Unmap().As4()
		e.flags |= flagLoc4
	} else {
		for _, a := range g.LocalAddrs {
			if !a.IsValid() {
				continue
			}
			a = a.Unmap().WithZone("")
			if !slices.Contains(local, a) {
				local = append(local, a)
			}
		}
	}
	for _, r := range recs {
		if rec, ok := makeRecord(r); ok && !slices.Contains(rs, rec) {
			rs = append(rs, rec)
		}
	}
	slices.SortStableFunc(rs, func(a, b record) int {
		return cmp.Or(strings.Compare(a.owner, b.owner), cmp.Compare(a.rtype, b.rtype))
	})
	if pub6.IsValid() || local != nil || rs != nil {
		e.ext = &extra{pub6: pub6, local: local, recs: rs}
	}
	return e
}

func makeRecord(r registry.Record) (record, bool) {
	owner := strings.ToLower(strings.TrimSuffix(r.Owner, "."))
	if owner == "@" {
		owner = ""
	}
	if owner != "" {
		// Escaped labels could never be looked up: find splits on dots.
		if _, ok := dns.IsDomainName(owner + "."); !ok || strings.ContainsRune(owner, '\\') {
			return record{}, false
		}
	}
	rec := record{owner: owner}
	if r.TTL > 0 {
		rec.ttl = uint32(min(r.TTL/time.Second, math.MaxInt32))
	}
	// NAME and local.NAME have addresses of their own; an A, AAAA or CNAME
	// record there would contradict them.
	synthesized := owner == "" || owner == "local"
	switch strings.ToUpper(r.Type) {
	case "TXT":
		rec.rtype, rec.data = dns.TypeTXT, r.Value
	case "A":
		a, err := netip.ParseAddr(strings.TrimSpace(r.Value))
		if err != nil || !a.Unmap().Is4() || synthesized {
			return record{}, false
		}
		b := a.Unmap().As4()
		rec.rtype, rec.data = dns.TypeA, string(b[:])
	case "AAAA":
		a, err := netip.ParseAddr(strings.TrimSpace(r.Value))
		if err != nil || !a.Is6() || a.Is4In6() || synthesized {
			return record{}, false
		}
		b := a.As16()
		rec.rtype, rec.data = dns.TypeAAAA, string(b[:])
	case "CNAME":
		target := canonical(strings.TrimSpace(r.Value))
		if !validName(target) || synthesized {
			return record{}, false
		}
		rec.rtype, rec.data = dns.TypeCNAME, target
	default:
		return record{}, false
	}
	return rec, true
}

func (e entry) equal(o entry) bool {
	if e.pub4 != o.pub4 || e.loc4 != o.loc4 || e.flags != o.flags {
		return false
	}
	if e.ext == nil || o.ext == nil {
		return e.ext == o.ext
	}
	return e.ext.pub6 == o.ext.pub6 && slices.Equal(e.ext.local, o.ext.local) && slices.Equal(e.ext.recs, o.ext.recs)
}

// recs returns the gateway's records (nil for most gateways).
func (e entry) recs() []record {
	if e.ext == nil {
		return nil
	}
	return e.ext.recs
}

// lookupSub reports whether sub (relative to the gateway) holds data, or
// is an empty non-terminal: a name with no data of its own that exists
// because a record lives below it.
func (e entry) lookupSub(sub string) (data, ent bool) {
	switch sub {
	case "":
		return true, false
	case "local":
		if e.flags&flagLoc4 != 0 || (e.ext != nil && len(e.ext.local) > 0) {
			return true, false
		}
	}
	for _, r := range e.recs() {
		if r.owner == sub {
			return true, false
		}
		if len(r.owner) > len(sub) && strings.HasSuffix(r.owner, sub) && r.owner[len(r.owner)-len(sub)-1] == '.' {
			ent = true
		}
	}
	return false, ent
}
