package registry

import (
	"context"
	"fmt"
)

// The zone's own records belong to no gateway. The only one the registry
// accepts is the zone's ACME DNS-01 challenge, so that the cloud can
// obtain its own wildcard certificate (*.ZONE) through the same records
// API the gateways use; everything else at the apex is configuration.
const (
	// ZoneChallenge is the owner, relative to the zone, of the zone's
	// challenge TXT records: _acme-challenge.ZONE.
	ZoneChallenge = "_acme-challenge"
	// ZoneChange is the name Store.Changes delivers, and Event.Name
	// carries, when the zone's own records changed: "@" can never be a
	// gateway's name.
	ZoneChange = "@"
)

// CheckZoneRecord validates and normalises one of the zone's own records:
// a TXT record at _acme-challenge, under the same limits as a gateway's.
// Anything else is ErrOutsideSubtree, the answer to a write outside what
// the writer may touch.
func CheckZoneRecord(rec *Record) error {
	if err := CheckRecord(rec); err != nil {
		return err
	}
	if rec.Owner != ZoneChallenge || rec.Type != "TXT" {
		return fmt.Errorf("%w: only TXT records at %s of the zone may be written, not %s %q", ErrOutsideSubtree, ZoneChallenge, rec.Type, rec.Owner)
	}
	return nil
}

// ZoneRecords returns the zone's own records.
func (r *Registry) ZoneRecords(ctx context.Context) ([]Record, error) {
	return r.store.ZoneRecords(ctx)
}

// AppendZoneRecords adds challenge values at _acme-challenge.ZONE.
func (r *Registry) AppendZoneRecords(ctx context.Context, recs []Record) ([]Record, error) {
	if err := r.prepareZone(recs); err != nil {
		return nil, err
	}
	if err := r.store.AppendZoneRecords(ctx, recs, r.cfg.MaxRecords); err != nil {
		return nil, err
	}
	return recs, r.emitZoneRecords(ctx)
}

// SetZoneRecords replaces the challenge values at _acme-challenge.ZONE.
func (r *Registry) SetZoneRecords(ctx context.Context, recs []Record) ([]Record, error) {
	if err := r.prepareZone(recs); err != nil {
		return nil, err
	}
	if err := r.store.SetZoneRecords(ctx, recs, r.cfg.MaxRecords); err != nil {
		return nil, err
	}
	return recs, r.emitZoneRecords(ctx)
}

// DeleteZoneRecords removes the zone's own records matching any filter.
// Each filter must name _acme-challenge, the one name it may touch; its
// type, if given, must be TXT.
func (r *Registry) DeleteZoneRecords(ctx context.Context, filters []RecordFilter) ([]Record, error) {
	filters = normalizeFilters(filters)
	for _, f := range filters {
		if f.Owner == nil || *f.Owner != ZoneChallenge || (f.Type != "" && f.Type != "TXT") {
			return nil, fmt.Errorf("%w: only TXT records at %s of the zone may be deleted", ErrOutsideSubtree, ZoneChallenge)
		}
	}
	deleted, err := r.store.DeleteZoneRecords(ctx, filters)
	if err != nil {
		return nil, err
	}
	if len(deleted) > 0 {
		return deleted, r.emitZoneRecords(ctx)
	}
	return deleted, nil
}

func (r *Registry) prepareZone(recs []Record) error {
	if len(recs) > r.cfg.MaxRecords {
		return ErrTooMany
	}
	now := r.now().UTC()
	for i := range recs {
		recs[i].Gateway = ""
		recs[i].Created = now
		if err := CheckZoneRecord(&recs[i]); err != nil {
			return err
		}
	}
	return nil
}

// emitZoneRecords tells observers the zone's records as they now are.
func (r *Registry) emitZoneRecords(ctx context.Context) error {
	recs, err := r.store.ZoneRecords(ctx)
	if err != nil {
		return err
	}
	r.emit(Event{Name: ZoneChange, Zone: true, Records: recs, RecordsChanged: true})
	return nil
}
