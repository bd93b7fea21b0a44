package dnszone

import (
	"slices"

	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/miekg/dns"
)

// Apply brings the index in step with one registry event, whatever its
// subtree: a gateway's (its addresses and records, or its removal) or the
// zone's own records.
func (x *Index) Apply(ev registry.Event) {
	if ev.Subtree.IsZone() {
		if ev.RecordsChanged {
			x.putZoneRecords(ev.Records)
		}
		return
	}
	name, ok := ev.Subtree.Gateway()
	if !ok {
		return
	}
	switch {
	case ev.Gateway == nil:
		x.Remove(name)
	case ev.RecordsChanged:
		x.Put(ev.Gateway, ev.Records)
	default:
		x.PutAddresses(ev.Gateway)
	}
}

// putZoneRecords replaces the records of the zone's own subtree: the ACME
// challenges at _acme-challenge.ZONE that the operator sets for the
// cloud's wildcard certificate. Owners are relative to the zone. Only TXT
// records below the apex are kept: the apex and every address of the zone
// come from the configuration, and a gateway's name can never start with
// "_", so these names never shadow one.
func (x *Index) putZoneRecords(recs []registry.Record) {
	var rs []record
	for _, r := range recs {
		if rec, ok := makeRecord(r); ok && rec.owner != "" && rec.rtype == dns.TypeTXT && !slices.Contains(rs, rec) {
			rs = append(rs, rec)
		}
	}
	var next *extra
	if len(rs) > 0 {
		next = &extra{recs: rs}
	}
	old := x.zone.Swap(next)
	if old == nil && next == nil || old != nil && next != nil && slices.Equal(old.recs, next.recs) {
		return
	}
	x.bump()
}

// zoneEntry returns the zone's own records as an entry whose subtree is
// the zone, so that the gateway lookup and answer code serves them; ok is
// false when there are none.
func (x *Index) zoneEntry() (entry, bool) {
	z := x.zone.Load()
	return entry{ext: z}, z != nil
}
