package dnsprovider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/apierror"
)

// Retry policy. libdns asks providers to retry 5xx and 429 answers a few
// times without adding more than a couple of seconds: CertMagic has its own
// retries on top.
const (
	maxAttempts = 4
	firstDelay  = 250 * time.Millisecond
	// maxRetryAfter caps the Retry-After the provider waits for; a server
	// asking for longer gets its error returned at once rather than a
	// caller stalled.
	maxRetryAfter = 3 * time.Second
	// maxBody bounds what is read from an answer: a gateway's records fit
	// in a few KiB.
	maxBody      = 4 << 20
	maxErrorBody = 64 << 10
	userAgent    = "gatehouse-dnsprovider"
)

// defaultClient is used when Provider.HTTPClient is nil. Its timeout bounds a
// request whose context has no deadline.
var defaultClient = &http.Client{Timeout: 30 * time.Second}

// APIError is an error answer of the Gatehouse API: an HTTP status and the
// JSON body {"error": "Name", "reason": "human text"}.
type APIError struct {
	StatusCode int
	// Code is the "error" field, such as "OutsideSubtree"; empty when the
	// body was not the API's JSON (a proxy's error page, say).
	Code string
	// Reason is the "reason" field, the server's explanation.
	Reason string
	// RetryAfter is the wait the server asked for, if any.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "api answered %d", e.StatusCode)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	} else {
		b.WriteString(" " + strings.ToLower(http.StatusText(e.StatusCode)))
	}
	if e.Reason != "" {
		b.WriteString(": " + e.Reason)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	return b.String()
}

// Unwrap maps the answer to the package's sentinel errors, so callers can
// branch with errors.Is.
func (e *APIError) Unwrap() error {
	switch {
	case e.Code == apierror.OutsideSubtree:
		return ErrOutsideSubtree
	case e.Code == apierror.UnsupportedType:
		return ErrUnsupportedType
	case e.StatusCode == http.StatusUnauthorized:
		return ErrUnauthorized
	case e.StatusCode == http.StatusTooManyRequests:
		return ErrRateLimited
	case e.StatusCode == http.StatusBadRequest:
		return ErrInvalidRecord
	}
	return nil
}

// do sends one API call, with retries, and decodes a 2xx answer into out.
func (p *Provider) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	u, err := p.url(path, query)
	if err != nil {
		return err
	}
	var body []byte
	if in != nil {
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("encoding request: %w", err)
		}
	}
	// A repeated GET, PUT or DELETE does no harm; a POST (append) is only
	// repeated when the answer shows the server did not apply it.
	idempotent := method != http.MethodPost
	delay := firstDelay
	for attempt := 1; ; attempt++ {
		err := p.once(ctx, method, u, body, out)
		if err == nil {
			return nil
		}
		wait, retry := retryable(err, idempotent)
		if !retry || attempt == maxAttempts || ctx.Err() != nil {
			return err
		}
		if wait == 0 {
			// Jitter keeps gateways that failed together from
			// retrying together.
			wait = delay/2 + rand.N(delay)
			delay *= 2
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (while waiting to retry after: %w)", context.Cause(ctx), err)
		case <-t.C:
		}
	}
}

// url builds the request URL from the endpoint.
func (p *Provider) url(path string, query url.Values) (string, error) {
	if p.Endpoint == "" || p.Token == "" {
		return "", fmt.Errorf("%w: endpoint and token are required", ErrConfig)
	}
	base, err := url.Parse(p.Endpoint)
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" {
		return "", fmt.Errorf("%w: endpoint %q is not an http(s) url", ErrConfig, p.Endpoint)
	}
	u := base.JoinPath(path)
	u.RawQuery = query.Encode()
	return u.String(), nil
}

// once sends one request and reads its answer.
func (p *Provider) once(ctx context.Context, method, u string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+p.Token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := p.HTTPClient
	if client == nil {
		client = defaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return &transportError{err}
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return apiError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(out); err != nil {
		return fmt.Errorf("decoding the %d answer: %w", resp.StatusCode, err)
	}
	return nil
}

// transportError marks a request that got no HTTP answer; the server may or
// may not have seen it.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// apiError reads an error answer.
func apiError(resp *http.Response) *APIError {
	e := &APIError{StatusCode: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	var body apierror.Body
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if json.Unmarshal(raw, &body) == nil {
		e.Code, e.Reason = body.Error, body.Reason
	}
	return e
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		return max(time.Duration(s)*time.Second, 0)
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// retryable says whether err is worth another attempt and how long the
// server asked to wait (0: use the backoff).
func retryable(err error, idempotent bool) (time.Duration, bool) {
	var te *transportError
	if errors.As(err, &te) {
		return 0, idempotent
	}
	var ae *APIError
	if !errors.As(err, &ae) {
		return 0, false // a bad answer to decode will not get better
	}
	switch {
	case ae.StatusCode == http.StatusTooManyRequests,
		ae.StatusCode >= 500 && ae.StatusCode != http.StatusNotImplemented && ae.StatusCode != http.StatusHTTPVersionNotSupported:
	default:
		return 0, false
	}
	if ae.RetryAfter > maxRetryAfter {
		return 0, false
	}
	// A 429 or 5xx answer means the API applied nothing (it applies a
	// request entirely or not at all), so even an append may be repeated.
	return ae.RetryAfter, true
}
