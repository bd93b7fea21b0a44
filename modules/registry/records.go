package registry

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Limits on what a gateway may publish in its subtree.
const (
	MaxTXTLength   = 1024
	MinRecordTTL   = 30 * time.Second
	MaxRecordTTL   = 24 * time.Hour
	maxOwnerLength = 200
)

// CheckRecord validates and normalises one record of a gateway's subtree.
func CheckRecord(rec *Record) error {
	rec.Type = strings.ToUpper(rec.Type)
	rec.Owner = strings.ToLower(strings.TrimSuffix(rec.Owner, "."))
	if err := checkOwner(rec.Owner); err != nil {
		return err
	}
	switch rec.Type {
	case "TXT":
		if len(rec.Value) > MaxTXTLength {
			return fmt.Errorf("%w: TXT value longer than %d bytes", ErrInvalidInput, MaxTXTLength)
		}
		if err := checkText(rec.Value, MaxTXTLength, "TXT value"); err != nil {
			return err
		}
	case "A", "AAAA":
		if rec.Owner == "" {
			return fmt.Errorf("%w: the name's own addresses follow its mode; %s records go below it", ErrInvalidInput, rec.Type)
		}
		ip, err := netip.ParseAddr(rec.Value)
		if err != nil || (rec.Type == "A") != ip.Is4() || ip.Zone() != "" {
			return fmt.Errorf("%w: %q is not an %s address", ErrInvalidInput, rec.Value, rec.Type)
		}
		rec.Value = ip.String()
	case "CNAME":
		if rec.Owner == "" {
			return fmt.Errorf("%w: CNAME only below the gateway's name", ErrInvalidInput)
		}
		v := strings.ToLower(strings.TrimSuffix(rec.Value, "."))
		if err := checkHostname(v); err != nil {
			return fmt.Errorf("%w: CNAME target: %v", ErrInvalidInput, err)
		}
		rec.Value = v + "."
	default:
		return fmt.Errorf("%w: %q (TXT, A, AAAA and CNAME are served)", ErrUnsupportedType, rec.Type)
	}
	if rec.TTL == 0 {
		rec.TTL = 5 * time.Minute
	}
	rec.TTL = min(max(rec.TTL, MinRecordTTL), MaxRecordTTL)
	return nil
}

func checkOwner(owner string) error {
	if owner == "" {
		return nil
	}
	if len(owner) > maxOwnerLength {
		return fmt.Errorf("%w: name too long", ErrInvalidInput)
	}
	for _, label := range strings.Split(owner, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%w: bad label in %q", ErrInvalidInput, owner)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '*' && len(label) == 1) {
				return fmt.Errorf("%w: bad character in %q", ErrInvalidInput, owner)
			}
		}
	}
	return nil
}

func checkHostname(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("bad length")
	}
	return checkOwner(name)
}

// Records returns the gateway's records.
func (r *Registry) Records(ctx context.Context, g *Gateway) ([]Record, error) {
	return r.store.Records(ctx, g.Name)
}

// AppendRecords adds records to g's subtree.
func (r *Registry) AppendRecords(ctx context.Context, g *Gateway, recs []Record) ([]Record, error) {
	if err := r.prepare(g, recs); err != nil {
		return nil, err
	}
	if err := r.store.AppendRecords(ctx, g.Name, recs, r.cfg.MaxRecords); err != nil {
		return nil, err
	}
	return recs, r.emitRecords(ctx, g)
}

// SetRecords replaces the RRsets named by recs in g's subtree.
func (r *Registry) SetRecords(ctx context.Context, g *Gateway, recs []Record) ([]Record, error) {
	if err := r.prepare(g, recs); err != nil {
		return nil, err
	}
	if err := r.store.SetRecords(ctx, g.Name, recs, r.cfg.MaxRecords); err != nil {
		return nil, err
	}
	return recs, r.emitRecords(ctx, g)
}

// DeleteRecords removes the records of g matching any filter.
func (r *Registry) DeleteRecords(ctx context.Context, g *Gateway, filters []RecordFilter) ([]Record, error) {
	filters = normalizeFilters(filters)
	deleted, err := r.store.DeleteRecords(ctx, g.Name, filters)
	if err != nil {
		return nil, err
	}
	if len(deleted) > 0 {
		return deleted, r.emitRecords(ctx, g)
	}
	return deleted, nil
}

func (r *Registry) prepare(g *Gateway, recs []Record) error {
	if len(recs) > r.cfg.MaxRecords {
		return ErrTooMany
	}
	now := r.now().UTC()
	for i := range recs {
		recs[i].Gateway = g.Name
		recs[i].Created = now
		if err := CheckRecord(&recs[i]); err != nil {
			return err
		}
	}
	// A CNAME owns its name alone (RFC 1034 3.6.2).
	types := map[string]map[string]bool{}
	for _, rec := range recs {
		if types[rec.Owner] == nil {
			types[rec.Owner] = map[string]bool{}
		}
		types[rec.Owner][rec.Type] = true
	}
	for owner, t := range types {
		if t["CNAME"] && len(t) > 1 {
			return fmt.Errorf("%w: CNAME and other data at %q", ErrConflict, owner)
		}
	}
	return nil
}

// normalizeFilters gives delete filters the forms the store holds, so that
// a filter names a record however its fields were written: an address in
// any notation, a CNAME target in any case or without its final dot, a TTL
// outside the bounds clamped as it was when the record was written. A
// value that does not parse is kept as given: it matches nothing.
func normalizeFilters(filters []RecordFilter) []RecordFilter {
	out := make([]RecordFilter, len(filters))
	for i, f := range filters {
		f.Type = strings.ToUpper(f.Type)
		if f.Owner != nil {
			owner := strings.ToLower(strings.TrimSuffix(*f.Owner, "."))
			f.Owner = &owner
		}
		if f.Type != "" && f.Value != "" {
			// Any owner below the name takes every type.
			probe := Record{Owner: "x", Type: f.Type, Value: f.Value}
			if CheckRecord(&probe) == nil {
				f.Value = probe.Value
			}
		}
		if f.TTL != 0 {
			f.TTL = min(max(f.TTL, MinRecordTTL), MaxRecordTTL)
		}
		out[i] = f
	}
	return out
}
