// Package dnsprovider is a libdns provider for Gatehouse: it reads and
// changes a gateway's DNS records through the Gatehouse /v1 records API,
// authenticated with the gateway's token. CertMagic uses it for the gateway's
// ACME DNS-01 challenges, a gateway that runs Caddy uses it through the
// dns.providers.gatehouse module, and the cloud for its own wildcard
// certificate.
//
// It is a plain HTTP client: it knows nothing of Caddy, of the registry or of
// DNS wire formats. The API serves only A, AAAA, CNAME and TXT records in the
// gateway's own subtree (NAME.ZONE and below); other record types are refused
// before any request is made, and the server answers 403 for names outside
// the subtree (ErrOutsideSubtree).
//
// Atomicity: each method is one API request, and the API applies each
// request entirely or not at all, so a failed SetRecords leaves the zone as
// it was; the errors are not marked libdns.AtomicErr, though, because a
// request that timed out may still have been applied.
package dnsprovider

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/libdns/libdns"
)

// Provider talks to one Gatehouse API as one gateway. The zero value is not
// usable: Endpoint and Token are required. A Provider is safe for
// concurrent use; it holds no state beyond its configuration.
type Provider struct {
	// Endpoint is the base URL of the Gatehouse API, for example
	// https://api.box.example.org.
	Endpoint string `json:"endpoint,omitempty"`
	// Token is the gateway's token, sent as a bearer token.
	Token string `json:"token,omitempty"`
	// HTTPClient sends the requests; nil means a client with a 30-second
	// timeout. Contexts bound every call in any case.
	HTTPClient *http.Client `json:"-"`
}

// Errors that callers branch on. API errors match them through errors.Is;
// errors.As with *APIError gives the details.
var (
	// ErrUnsupportedType: the record type is not one the API serves.
	ErrUnsupportedType = errors.New("dnsprovider: unsupported record type")
	// ErrInvalidRecord: a record is incomplete or its data does not parse.
	ErrInvalidRecord = errors.New("dnsprovider: invalid record")
	// ErrConfig: Endpoint or Token is missing or unusable.
	ErrConfig = errors.New("dnsprovider: incomplete configuration")
	// ErrOutsideSubtree: the API refused a record outside the gateway's
	// own subtree (403 OutsideSubtree).
	ErrOutsideSubtree = errors.New("dnsprovider: record outside the gateway's subtree")
	// ErrUnauthorized: the API did not accept the token (401).
	ErrUnauthorized = errors.New("dnsprovider: token refused")
	// ErrRateLimited: the API kept answering 429.
	ErrRateLimited = errors.New("dnsprovider: rate limited")
)

// supportedTypes are the record types the Gatehouse API serves.
var supportedTypes = map[string]bool{"A": true, "AAAA": true, "CNAME": true, "TXT": true}

// record is one RECORD of the API (docs/api.md). Type, data and ttl are
// omitted when empty, which DELETE reads as "match anything".
type record struct {
	Name string `json:"name"`
	Type string `json:"type,omitempty"`
	Data string `json:"data,omitempty"`
	TTL  int64  `json:"ttl,omitempty"` // seconds
}

type recordsRequest struct {
	Zone    string   `json:"zone"`
	Records []record `json:"records"`
}

type recordsResponse struct {
	Records []record `json:"records"`
}

type zonesResponse struct {
	Zones []struct {
		Name string `json:"name"`
	} `json:"zones"`
}

// GetRecords returns the records the gateway may manage in zone, which is
// the Gatehouse zone or a name in the gateway's subtree.
func (p *Provider) GetRecords(ctx context.Context, zone string) ([]libdns.Record, error) {
	zone, err := fqdn(zone)
	if err != nil {
		return nil, err
	}
	var out recordsResponse
	if err := p.do(ctx, http.MethodGet, "/v1/records", url.Values{"zone": {zone}}, nil, &out); err != nil {
		return nil, fmt.Errorf("dnsprovider: getting records of %s: %w", zone, err)
	}
	return fromAPI(out.Records)
}

// AppendRecords adds recs to zone and returns the records added.
func (p *Provider) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	return p.change(ctx, http.MethodPost, "appending", zone, recs)
}

// SetRecords makes recs the only records of each of their (name, type)
// pairs in zone and returns them as set.
func (p *Provider) SetRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	return p.change(ctx, http.MethodPut, "setting", zone, recs)
}

// DeleteRecords deletes the records of zone that match recs, where an empty
// type, data or zero TTL matches anything, and returns those deleted.
func (p *Provider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	return p.change(ctx, http.MethodDelete, "deleting", zone, recs)
}

// ListZones returns the zones the API serves.
func (p *Provider) ListZones(ctx context.Context) ([]libdns.Zone, error) {
	var out zonesResponse
	if err := p.do(ctx, http.MethodGet, "/v1/zones", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("dnsprovider: listing zones: %w", err)
	}
	zones := make([]libdns.Zone, 0, len(out.Zones))
	for _, z := range out.Zones {
		zones = append(zones, libdns.Zone{Name: z.Name})
	}
	return zones, nil
}

// change sends one append, set or delete request.
func (p *Provider) change(ctx context.Context, method, verb, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	zone, err := fqdn(zone)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, nil // nothing to do; spare the API a request
	}
	in := recordsRequest{Zone: zone, Records: make([]record, 0, len(recs))}
	for _, r := range recs {
		ar, err := toAPI(r, method == http.MethodDelete)
		if err != nil {
			return nil, err
		}
		in.Records = append(in.Records, ar)
	}
	var out recordsResponse
	if err := p.do(ctx, method, "/v1/records", nil, in, &out); err != nil {
		return nil, fmt.Errorf("dnsprovider: %s records in %s: %w", verb, zone, err)
	}
	return fromAPI(out.Records)
}

// toAPI converts a libdns record for the API. Records to delete may leave
// type, data and TTL empty; others must be complete and parse.
func toAPI(r libdns.Record, deleting bool) (record, error) {
	rr := r.RR()
	if rr.Name == "" {
		return record{}, fmt.Errorf("%w: empty name (use @ for the zone itself)", ErrInvalidRecord)
	}
	if rr.TTL < 0 {
		return record{}, fmt.Errorf("%w: %s: negative ttl", ErrInvalidRecord, rr.Name)
	}
	out := record{Name: rr.Name, Type: rr.Type, Data: rr.Data, TTL: int64(rr.TTL / time.Second)}
	if deleting && rr.Type == "" {
		return out, nil
	}
	if !supportedTypes[rr.Type] {
		return record{}, fmt.Errorf("%w: %s %q", ErrUnsupportedType, rr.Name, rr.Type)
	}
	if deleting && rr.Data == "" {
		return out, nil
	}
	// Parsing catches what the API would refuse anyway (an A record
	// without an IPv4 address, ...) before anything is sent.
	parsed, err := rr.Parse()
	if err != nil {
		return record{}, fmt.Errorf("%w: %s %s: %w", ErrInvalidRecord, rr.Name, rr.Type, err)
	}
	// libdns.RR.Parse accepts an IPv6 address in an A record and the
	// reverse; the API would not.
	if a, ok := parsed.(libdns.Address); ok && (rr.Type == "A") != a.IP.Is4() {
		return record{}, fmt.Errorf("%w: %s %s: address %s of the wrong family", ErrInvalidRecord, rr.Name, rr.Type, a.IP)
	}
	if rr.Data == "" {
		return record{}, fmt.Errorf("%w: %s %s: empty data", ErrInvalidRecord, rr.Name, rr.Type)
	}
	return out, nil
}

// fromAPI converts API records to the typed libdns records (libdns.Address,
// libdns.CNAME, libdns.TXT) that callers type-switch on.
func fromAPI(in []record) ([]libdns.Record, error) {
	out := make([]libdns.Record, 0, len(in))
	for _, r := range in {
		if !supportedTypes[r.Type] {
			return nil, fmt.Errorf("%w: the api returned %s %q", ErrUnsupportedType, r.Name, r.Type)
		}
		rec, err := libdns.RR{Name: r.Name, Type: r.Type, Data: r.Data, TTL: time.Duration(r.TTL) * time.Second}.Parse()
		if err != nil {
			return nil, fmt.Errorf("%w: the api returned %s %s %q: %w", ErrInvalidRecord, r.Name, r.Type, r.Data, err)
		}
		out = append(out, rec)
	}
	return out, nil
}

// fqdn returns zone with its trailing dot, the form docs/api.md uses.
func fqdn(zone string) (string, error) {
	zone = strings.TrimSpace(zone)
	if zone == "" || zone == "." {
		return "", errors.New("dnsprovider: empty zone")
	}
	if !strings.HasSuffix(zone, ".") {
		zone += "."
	}
	return zone, nil
}

// Interface guards.
var (
	_ libdns.RecordGetter   = (*Provider)(nil)
	_ libdns.RecordAppender = (*Provider)(nil)
	_ libdns.RecordSetter   = (*Provider)(nil)
	_ libdns.RecordDeleter  = (*Provider)(nil)
	_ libdns.ZoneLister     = (*Provider)(nil)
)
