// Package cloudapi is the gateway agent's client of the Gatehouse
// registration API (/v1, docs/api.md): subscribe, ping, info, email,
// reclaim and unsubscribe. DNS records go through modules/dnsprovider and
// the tunnel through modules/tunnel/client; this package does neither.
//
// Errors keep the server's explanation: an *Error carries the API's error
// name and its human reason, so the setup page can show why a name was
// refused. Tokens are sent as bearer tokens and never appear in errors.
package cloudapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/apierror"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// Errors callers branch on, matched with errors.Is.
var (
	// ErrUnreachable: no answer from the cloud (network down, DNS, TLS,
	// a timeout).
	ErrUnreachable = errors.New("cloud unreachable")
	// ErrTokenRefused: the cloud does not know the token (the name was
	// reclaimed elsewhere, unsubscribed, or the state belongs to another
	// cloud).
	ErrTokenRefused = errors.New("token refused by the cloud")
	// ErrNameUnavailable: subscribe refused the name (taken, reserved or
	// invalid); the *Error says why.
	ErrNameUnavailable = errors.New("name unavailable")
)

// Error is an error answer of the API.
type Error struct {
	Status int
	// Code is the API's error name, e.g. UnavailableName.
	Code string
	// Reason is the server's explanation for people.
	Reason string
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("cloud answered %d", e.Status)
	if e.Code != "" {
		msg += " " + e.Code
	}
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// Is lets errors.Is match the sentinel a code stands for.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrTokenRefused:
		return e.Status == http.StatusUnauthorized || (e.Status == http.StatusNotFound && e.Code == apierror.NotFound)
	case ErrNameUnavailable:
		switch e.Code {
		case apierror.UnavailableName, apierror.UnavailableNameReclamationPossible, apierror.InvalidName:
			return true
		}
	}
	return false
}

// Explain turns err into a sentence for the owner: the server's reason when
// it gave one, else a plain description.
func Explain(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		switch e.Code {
		case apierror.UnavailableName:
			if e.Reason != "" && !strings.Contains(e.Reason, "taken") {
				return "this name is not available: " + e.Reason
			}
			return "this name is already taken"
		case apierror.UnavailableNameReclamationPossible:
			return "this name is taken, but its owner verified an email: ask for a reclamation token and enter it below"
		case apierror.InvalidName:
			return "this name is not valid: " + strings.TrimPrefix(e.Reason, "invalid name: ")
		case apierror.ReclamationTokenMismatch:
			return "the reclamation token does not match this name"
		case apierror.ExpiredToken:
			return "the reclamation token has expired: ask for a new one"
		case apierror.RateLimited:
			return "too many attempts: wait a minute and try again"
		case apierror.InvalidEmail:
			return "this email address is not valid"
		case apierror.EmailUnavailable:
			return "the cloud cannot send mail"
		case apierror.NoEmail:
			return "this name has no verified email, so it cannot be reclaimed"
		case apierror.NoSuchName:
			return "no gateway has this name"
		}
		if errors.Is(err, ErrTokenRefused) {
			return "the cloud refused this gateway's token (the name was reclaimed by another gateway or removed)"
		}
		if e.Reason != "" {
			return e.Reason
		}
		return e.Error()
	case errors.Is(err, ErrUnreachable):
		return "the cloud is unreachable: " + err.Error()
	}
	return err.Error()
}

// Client calls one Gatehouse API.
type Client struct {
	// Endpoint is the API's base URL, https://api.ZONE.
	Endpoint string
	// HTTPClient sends the requests (its Transport carries the roots and
	// the dialer); nil means one with a 30-second timeout.
	HTTPClient *http.Client
	// UserAgent identifies the agent.
	UserAgent string
}

var defaultClient = &http.Client{Timeout: 30 * time.Second}

// SubscribeRequest asks for a name: by Name or by MAC.
type SubscribeRequest struct {
	Name             string        `json:"name,omitempty"`
	MAC              string        `json:"mac,omitempty"`
	Email            string        `json:"email,omitempty"`
	Description      string        `json:"description,omitempty"`
	Mode             registry.Mode `json:"mode,omitempty"`
	ReclamationToken string        `json:"reclamation_token,omitempty"`
}

// Subscription is the cloud's answer to a subscribe.
type Subscription struct {
	Name  string `json:"name"`
	Token string `json:"token"`
	Zone  string `json:"zone"`
	FQDN  string `json:"fqdn"`
}

// Info is a gateway's record as the cloud shows it.
type Info struct {
	Name          string   `json:"name"`
	FQDN          string   `json:"fqdn"`
	Mode          string   `json:"mode"`
	Email         string   `json:"email"`
	EmailVerified bool     `json:"email_verified"`
	Expired       bool     `json:"expired"`
	LastPing      string   `json:"last_ping"`
	PublicIPv4    string   `json:"public_ipv4"`
	PublicIPv6    string   `json:"public_ipv6"`
	LocalAddrs    []string `json:"local_addrs"`
}

// Subscribe registers a name, or reclaims one with a reclamation token.
func (c *Client) Subscribe(ctx context.Context, req SubscribeRequest) (*Subscription, error) {
	var out Subscription
	if err := c.do(ctx, http.MethodPost, "/v1/subscribe", "", req, &out); err != nil {
		return nil, err
	}
	if out.Name == "" || out.Token == "" {
		return nil, errors.New("subscribe: the cloud's answer has no name or token")
	}
	return &out, nil
}

// Ping reports the gateway's LAN addresses (its public address is what the
// cloud sees) and returns its record.
func (c *Client) Ping(ctx context.Context, token string, local []netip.Addr) (*Info, error) {
	addrs := make([]string, 0, len(local))
	for _, a := range local {
		addrs = append(addrs, a.String())
	}
	var out Info
	if err := c.do(ctx, http.MethodPost, "/v1/ping", token, map[string][]string{"local_addrs": addrs}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Info returns the gateway's record.
func (c *Client) Info(ctx context.Context, token string) (*Info, error) {
	var out Info
	if err := c.do(ctx, http.MethodGet, "/v1/info", token, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Node is one live cloud node: its name and the addresses its tunnel
// endpoint answers on.
type Node struct {
	Name  string
	Addrs []netip.Addr
}

// Nodes lists the cloud's live nodes (GET /v1/nodes), sorted by name. A
// cloud older than the endpoint answers 404: that is no node, not an
// error, as is a node without a usable address (it is left out).
func (c *Client) Nodes(ctx context.Context, token string) ([]Node, error) {
	var out struct {
		Nodes []struct {
			Name  string   `json:"name"`
			Addrs []string `json:"addrs"`
		} `json:"nodes"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/nodes", token, nil, &out)
	var e *Error
	if errors.As(err, &e) && e.Status == http.StatusNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	nodes := make([]Node, 0, len(out.Nodes))
	for _, n := range out.Nodes {
		node := Node{Name: n.Name}
		for _, s := range n.Addrs {
			if ad, err := netip.ParseAddr(s); err == nil {
				node.Addrs = append(node.Addrs, ad.Unmap())
			}
		}
		if n.Name != "" && len(node.Addrs) > 0 {
			nodes = append(nodes, node)
		}
	}
	return nodes, nil
}

// SetEmail sets the owner's email; the cloud mails a verification link.
func (c *Client) SetEmail(ctx context.Context, token, email string) error {
	return c.do(ctx, http.MethodPost, "/v1/email", token, map[string]any{"email": email}, nil)
}

// Reclaim asks the cloud to mail a reclamation token for name to its
// verified owner.
func (c *Client) Reclaim(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodPost, "/v1/reclaim", "", map[string]string{"name": name}, nil)
}

// Unsubscribe gives the token's name up.
func (c *Client) Unsubscribe(ctx context.Context, token string) error {
	return c.do(ctx, http.MethodDelete, "/v1/gateway", token, nil, nil)
}

// maxBody bounds what is read from an answer.
const maxBody = 1 << 20

func (c *Client) do(ctx context.Context, method, path, token string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.Endpoint, "/")+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Accept", "application/json")
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = defaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// The url.Error names the URL, never the token (it is a header).
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("%w: reading the answer to %s %s: %w", ErrUnreachable, method, path, err)
	}
	if resp.StatusCode >= 300 {
		e := &Error{Status: resp.StatusCode}
		var eb apierror.Body
		if json.Unmarshal(b, &eb) == nil {
			e.Code, e.Reason = eb.Error, eb.Reason
		}
		if e.Code == "" && resp.StatusCode >= 500 {
			// Not the API's JSON: a proxy or load balancer in front of
			// a cloud that is down.
			return fmt.Errorf("%w: %s %s: %w", ErrUnreachable, method, path, e)
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: malformed answer: %w", method, path, err)
	}
	return nil
}
