package cloudapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/apierror"
)

// Domain is a custom domain a gateway holds.
type Domain struct {
	Domain  string `json:"domain"`
	Gateway string `json:"gateway"`
	// CheckedAt is when the cloud last found both CNAMEs in place.
	CheckedAt time.Time `json:"checked_at"`
}

// ClaimDomain asks the cloud to route domain to the token's gateway. The
// cloud grants it once domain has a CNAME to NAME.ZONE and
// _acme-challenge.DOMAIN one to _acme-challenge.NAME.ZONE; until then the
// error matches ErrDomainNotDelegated and its reason says which record is
// missing. ErrDomainRefused means no record will change the answer.
func (c *Client) ClaimDomain(ctx context.Context, token, domain string) (*Domain, error) {
	var out Domain
	if err := c.do(ctx, http.MethodPost, "/v1/domains", token, map[string]string{"domain": domain}, &out); err != nil {
		return nil, domainsError(err)
	}
	if !strings.EqualFold(out.Domain, domain) {
		return nil, errors.New("claiming " + domain + ": the cloud's answer names " + out.Domain)
	}
	return &out, nil
}

// Domains lists the custom domains the token's gateway holds.
func (c *Client) Domains(ctx context.Context, token string) ([]Domain, error) {
	var out struct {
		Domains []Domain `json:"domains"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/domains", token, nil, &out); err != nil {
		return nil, domainsError(err)
	}
	return out.Domains, nil
}

// ReleaseDomain gives domain up. A domain the gateway does not hold (any
// more) is no error: releasing is done either way.
func (c *Client) ReleaseDomain(ctx context.Context, token, domain string) error {
	err := c.do(ctx, http.MethodDelete, "/v1/domains/"+url.PathEscape(domain), token, nil, nil)
	var e *Error
	if errors.As(err, &e) && e.Status == http.StatusNotFound && e.Code == apierror.NoSuchDomain {
		return nil
	}
	return err
}

// domainsError tells a cloud without custom domains (404 NotFound on
// /v1/domains) from a refused token, which a 404 NotFound elsewhere means.
func domainsError(err error) error {
	var e *Error
	if errors.As(err, &e) && e.Status == http.StatusNotFound && e.Code == apierror.NotFound {
		return fmt.Errorf("%w: %s", ErrDomainsUnsupported, e.Reason)
	}
	return err
}
