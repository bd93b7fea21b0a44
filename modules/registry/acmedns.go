package registry

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// maxAllowFrom bounds the networks one acme-dns account may list.
const maxAllowFrom = 64

// ParseAllowFrom reads acme-dns's allowfrom list: CIDR networks, IPv6 ones
// possibly in brackets ("[2001:db8::]/32"), as acme-dns strips them. The
// address keeps its host bits, as given ("192.0.2.7/24" stays so), since
// acme-dns answers the entries back as they were sent.
func ParseAllowFrom(entries []string) ([]netip.Prefix, error) {
	if len(entries) > maxAllowFrom {
		return nil, fmt.Errorf("%w: at most %d allowfrom networks", ErrInvalidInput, maxAllowFrom)
	}
	var out []netip.Prefix
	for _, e := range entries {
		s := strings.NewReplacer("[", "", "]", "").Replace(e)
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%w: allowfrom %q is not a CIDR network", ErrInvalidInput, e)
		}
		out = append(out, p)
	}
	return out, nil
}

// RegisterACMEDNS registers a gateway under a random name (a UUID, as
// acme-dns names its accounts' subdomains) for acme-dns's /register,
// whose /update is then accepted only from allowFrom (any address when
// empty). The gateway is in tunnel mode and has no email.
func (r *Registry) RegisterACMEDNS(ctx context.Context, allowFrom []netip.Prefix) (*Subscription, error) {
	// A collision of 122 random bits is not expected; a reserved or
	// taken name is simply drawn again.
	for range 3 {
		name, _ := NewReclaimToken()
		if r.names.Check(name) != nil {
			continue
		}
		sub, err := r.subscribe(ctx, SubscribeRequest{Name: name, Mode: ModeTunnel, Description: "acme-dns account"}, allowFrom)
		if errors.Is(err, ErrNameTaken) || errors.Is(err, ErrReservedName) {
			continue
		}
		return sub, err
	}
	return nil, fmt.Errorf("%w: no free random name", ErrNameTaken)
}

type clientIPKey struct{}

// WithClientIP returns ctx carrying the address of the client whose token
// is about to be checked, for checks that take only a context (the tunnel
// handshake's authenticate callback) and must honour Gateway.AllowFrom.
func WithClientIP(ctx context.Context, ip netip.Addr) context.Context {
	return context.WithValue(ctx, clientIPKey{}, ip)
}

// ClientIPFrom returns the address WithClientIP put in ctx.
func ClientIPFrom(ctx context.Context) (netip.Addr, bool) {
	ip, ok := ctx.Value(clientIPKey{}).(netip.Addr)
	return ip, ok
}
