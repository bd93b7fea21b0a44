package localapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/forward"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/status"
)

// Client calls the API of a running agent (the forward command).
type Client struct {
	// Base is http://HOST:PORT of api_listen.
	Base string
	// Key is the content of the state directory's api.key.
	Key string
	// HTTPClient defaults to one with a 10s timeout.
	HTTPClient *http.Client
}

// APIError is an error answer of the API.
type APIError struct {
	Status int
	// Name is the error's name (Error.Error) and Message its reason.
	Name, Message string
}

func (e *APIError) Error() string { return fmt.Sprintf("%s (%s)", e.Message, e.Name) }

// List returns the forwardings.
func (c *Client) List(ctx context.Context) ([]forward.Info, error) {
	var l List
	err := c.do(ctx, http.MethodGet, "/v1/forwards", nil, &l)
	return l.Forwards, err
}

// Add opens a forwarding.
func (c *Client) Add(ctx context.Context, spec forward.Spec) (forward.Info, error) {
	var info forward.Info
	err := c.do(ctx, http.MethodPost, "/v1/forwards", spec, &info)
	return info, err
}

// Remove closes the forwarding listening on local.
func (c *Client) Remove(ctx context.Context, local string) (forward.Info, error) {
	var info forward.Info
	err := c.do(ctx, http.MethodDelete, "/v1/forwards/"+url.PathEscape(local), nil, &info)
	return info, err
}

// Status returns the agent's status (GET /v1/status).
func (c *Client) Status(ctx context.Context) (status.Status, error) {
	var st status.Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("the agent's api is not answering on %s (is the agent running?): %w", c.Base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("reading the agent's answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var body Error
		if json.Unmarshal(b, &body) != nil || body.Error == "" {
			body = Error{Error: fmt.Sprintf("http_%d", resp.StatusCode), Message: "unexpected answer " + resp.Status}
		}
		return &APIError{Status: resp.StatusCode, Name: body.Error, Message: body.Message}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("unexpected answer from the agent: %w", err)
	}
	return nil
}
