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
	MaxTXTLength = 1024
	// MaxOwnerBytes bounds the answer size of the records at one owner
	// name, so that an answer, with a CNAME chain leading to it, the
	// question and EDNS, fits a DNS message (64 KiB) many times over: 16
	// TXT values of 1 KiB fit, 64 do not.
	MaxOwnerBytes  = 16 << 10
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
		if err := checkSynthesized(rec); err != nil {
			return err
		}
		ip, err := netip.ParseAddr(rec.Value)
		if err != nil || (rec.Type == "A") != ip.Is4() || ip.Zone() != "" {
			return fmt.Errorf("%w: %q is not an %s address", ErrInvalidInput, rec.Value, rec.Type)
		}
		if ip.Is4In6() {
			// DNS would serve it as an IPv6 address no client can
			// reach; the IPv4 address belongs in an A record.
			return fmt.Errorf("%w: %q is an IPv4-mapped address; use an A record", ErrInvalidInput, rec.Value)
		}
		rec.Value = ip.String()
	case "CNAME":
		if err := checkSynthesized(rec); err != nil {
			return err
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

// LocalOwner is the owner, relative to NAME.ZONE, where DNS answers the
// LAN addresses the gateway reports.
const LocalOwner = "local"

// checkSynthesized refuses address and alias records where DNS answers
// addresses of its own: NAME (its mode's addresses) and local.NAME (the
// reported LAN addresses). They could never be served.
func checkSynthesized(rec *Record) error {
	switch rec.Owner {
	case "":
		return fmt.Errorf("%w: the name's own addresses follow its mode; %s records go below it", ErrInvalidInput, rec.Type)
	case LocalOwner:
		return fmt.Errorf("%w: %s.NAME answers the addresses the gateway reports; %s records go elsewhere", ErrInvalidInput, LocalOwner, rec.Type)
	}
	return nil
}

// checkOwner checks an owner name relative to the subtree. A "*" label is
// refused: the zone does not synthesise wildcard answers (RFC 4592), so a
// wildcard record would be served only to a query for a literal "*".
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
			if c == '*' && len(label) == 1 {
				return fmt.Errorf("%w: wildcard owners are not served (%q)", ErrInvalidInput, owner)
			}
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
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

// Records returns the subtree's records, oldest first.
func (r *Registry) Records(ctx context.Context, s Subtree) ([]Record, error) {
	return r.store.Records(ctx, s)
}

// AppendRecords adds records to the subtree.
func (r *Registry) AppendRecords(ctx context.Context, s Subtree, recs []Record) ([]Record, error) {
	if err := r.prepare(s, recs); err != nil {
		return nil, err
	}
	if err := r.store.AppendRecords(ctx, s, recs, r.checkSubtree); err != nil {
		return nil, err
	}
	return recs, r.emitRecords(ctx, s)
}

// SetRecords replaces the RRsets named by recs in the subtree.
func (r *Registry) SetRecords(ctx context.Context, s Subtree, recs []Record) ([]Record, error) {
	if err := r.prepare(s, recs); err != nil {
		return nil, err
	}
	if err := r.store.SetRecords(ctx, s, recs, r.checkSubtree); err != nil {
		return nil, err
	}
	return recs, r.emitRecords(ctx, s)
}

// DeleteRecords removes the subtree's records matching any filter.
func (r *Registry) DeleteRecords(ctx context.Context, s Subtree, filters []RecordFilter) ([]Record, error) {
	filters = normalizeFilters(filters)
	if s.IsZone() {
		// The zone's subtree may only be touched at its challenge, so a
		// filter must say so: an empty one would match everything.
		for _, f := range filters {
			if f.Owner == nil || *f.Owner != ZoneChallenge || (f.Type != "" && f.Type != "TXT") {
				return nil, fmt.Errorf("%w: only TXT records at %s of the zone may be deleted", ErrOutsideSubtree, ZoneChallenge)
			}
		}
	}
	deleted, err := r.store.DeleteRecords(ctx, s, filters)
	if err != nil {
		return nil, err
	}
	if len(deleted) > 0 {
		return deleted, r.emitRecords(ctx, s)
	}
	return deleted, nil
}

// prepare checks and normalises recs for the subtree, before any store
// access: what one request alone gets wrong is refused without a
// transaction. checkSubtree then checks the whole set inside it.
func (r *Registry) prepare(s Subtree, recs []Record) error {
	if s.IsZero() {
		return ErrNoSubtree
	}
	if len(recs) > r.cfg.MaxRecords {
		return ErrTooMany
	}
	now := r.now().UTC()
	for i := range recs {
		recs[i].Subtree = s
		recs[i].Created = now
		if err := CheckRecord(&recs[i]); err != nil {
			return err
		}
		if s.IsZone() && (recs[i].Owner != ZoneChallenge || recs[i].Type != "TXT") {
			return fmt.Errorf("%w: only TXT records at %s of the zone may be written, not %s %q", ErrOutsideSubtree, ZoneChallenge, recs[i].Type, recs[i].Owner)
		}
	}
	return CheckRecordSet(recs)
}

// checkSubtree is the RecordCheck of every write: the subtree's whole
// record set, as the write would leave it, must be one DNS can serve.
func (r *Registry) checkSubtree(all []Record) error {
	if len(all) > r.cfg.MaxRecords {
		return fmt.Errorf("%w: the subtree would hold %d records, at most %d", ErrTooMany, len(all), r.cfg.MaxRecords)
	}
	return CheckRecordSet(all)
}

// CheckRecordSet refuses, in a subtree's records, what DNS could not serve
// at one owner name: a CNAME beside any other data (RFC 1034 3.6.2), and
// more data than fits in an answer with room to spare (ErrTooLarge).
func CheckRecordSet(recs []Record) error {
	type owner struct {
		types map[string]bool
		size  int
	}
	owners := map[string]*owner{}
	for _, rec := range recs {
		o := owners[rec.Owner]
		if o == nil {
			o = &owner{types: map[string]bool{}}
			owners[rec.Owner] = o
		}
		o.types[rec.Type] = true
		o.size += wireSize(rec)
	}
	for name, o := range owners {
		if o.types["CNAME"] && len(o.types) > 1 {
			return fmt.Errorf("%w: CNAME and other data at %q", ErrConflict, name)
		}
		if o.size > MaxOwnerBytes {
			return fmt.Errorf("%w: the records at %q take %d bytes in an answer, at most %d", ErrTooLarge, name, o.size, MaxOwnerBytes)
		}
	}
	return nil
}

// wireSize is what rec adds to a DNS answer: a compressed owner name (2
// bytes), type, class, TTL and length (10), and the data; a TXT value is
// sent as strings of at most 255 bytes, each with a length byte.
func wireSize(rec Record) int {
	n := 12
	switch rec.Type {
	case "A":
		n += 4
	case "AAAA":
		n += 16
	case "TXT":
		n += len(rec.Value) + max(1, (len(rec.Value)+254)/255)
	default:
		n += len(rec.Value) + 1
	}
	return n
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
