package gatehousehandler

import (
	"bytes"
	"strings"
	"testing"
)

func TestHostOnly(t *testing.T) {
	for in, want := range map[string]string{
		"alpha.box.test":      "alpha.box.test",
		"alpha.box.test:8443": "alpha.box.test",
		"[::1]:443":           "[::1]",
		"[::1]":               "[::1]",
		"":                    "",
	} {
		if got := hostOnly(in); got != want {
			t.Errorf("hostOnly(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOfflineTemplate(t *testing.T) {
	for _, tc := range []struct {
		d        offlineData
		want     []string
		unwanted []string
	}{
		{
			d:        offlineData{Host: "alpha.box.test", Name: "alpha", Known: true, LastSeen: "2026-01-02T03:04:05Z", Ago: "1h0m0s", RetryAfter: 30},
			want:     []string{"This gateway is offline", "<strong>alpha</strong>", "Last seen:", "2026-01-02T03:04:05Z", `content="30"`},
			unwanted: []string{"No such gateway", "did not accept"},
		},
		{
			d:    offlineData{Host: "alpha.box.test", Name: "alpha", Known: true, Live: true, Expired: true},
			want: []string{"did not accept this connection", "has not reported", "no longer resolves"},
		},
		{
			d:        offlineData{Host: "<script>.box.test"},
			want:     []string{"No such gateway", "&lt;script&gt;.box.test"},
			unwanted: []string{"<script>", "refresh"},
		},
	} {
		var b bytes.Buffer
		if err := offlineTemplate.Execute(&b, tc.d); err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%+v: page lacks %q:\n%s", tc.d, w, b.String())
			}
		}
		for _, w := range tc.unwanted {
			if strings.Contains(b.String(), w) {
				t.Errorf("%+v: page has %q", tc.d, w)
			}
		}
	}
}
