package regapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"unicode/utf8"

	"github.com/gatehouse-project/gatehouse/modules/apierror"
)

// maxParam bounds any single query parameter; the longest legitimate one is
// an email address (254) or a description (256).
const maxParam = 512

var errBadParams = errors.New("bad parameters")

// query is the validated query string of a compatible-surface request.
type query struct {
	values url.Values
}

// parseQuery rejects malformed escapes, non-UTF-8 and oversized values, and
// a parameter given twice with different values, before any handler sees them.
func parseQuery(r *http.Request) (*query, error) {
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed query string", errBadParams)
	}
	for k, vals := range v {
		if !utf8.ValidString(k) {
			return nil, fmt.Errorf("%w: parameter name is not UTF-8", errBadParams)
		}
		for _, s := range vals {
			if len(s) > maxParam {
				return nil, fmt.Errorf("%w: %s longer than %d bytes", errBadParams, k, maxParam)
			}
			if !utf8.ValidString(s) {
				return nil, fmt.Errorf("%w: %s is not UTF-8", errBadParams, k)
			}
			if s != vals[0] && k != "local_ip" {
				return nil, fmt.Errorf("%w: %s given twice", errBadParams, k)
			}
		}
	}
	return &query{values: v}, nil
}

func (q *query) get(k string) string { return q.values.Get(k) }

func (q *query) all(k string) []string { return q.values[k] }

// withQuery parses the query string or answers 400.
func withQuery(h func(w http.ResponseWriter, r *http.Request, q *query)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, err := parseQuery(r)
		if err != nil {
			writeError(w, http.StatusBadRequest, apierror.BadRequest, err.Error())
			return
		}
		h(w, r, q)
	}
}
