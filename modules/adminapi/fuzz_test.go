package adminapi_test

import (
	"errors"
	"net/url"
	"testing"

	"github.com/gatehouse-project/gatehouse/modules/adminapi"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// FuzzParseQuery: any query string is either a valid list query or
// refused with ErrInvalidInput, never a panic.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"", "name=gw&limit=10", "addr=192.168.1.20&expired=true", "mode=bogus", "limit=-1", "x=1", "online=maybe", "name=%00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, _, err := adminapi.ParseQuery(v)
		if err != nil {
			if !errors.Is(err, registry.ErrInvalidInput) && !errors.Is(err, registry.ErrInvalidName) {
				t.Fatalf("ParseQuery(%q) = %v: not ErrInvalidInput", raw, err)
			}
			return
		}
		if q.Limit < 1 || q.Limit > registry.MaxListLimit {
			t.Fatalf("ParseQuery(%q) accepted limit %d", raw, q.Limit)
		}
	})
}
