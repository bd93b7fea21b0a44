package node

import "testing"

func TestGatewayName(t *testing.T) {
	valid := func(n string) bool { return n != "api" }
	for _, tc := range []struct {
		host, name string
		ok         bool
	}{
		{"myhome.box.test", "myhome", true},
		{"MyHome.Box.Test.", "myhome", true},
		{"myhome.box.test:8443", "myhome", true},
		{"a.b.myhome.box.test", "myhome", true},
		{"api.box.test", "", false},
		{"box.test", "", false},
		{".box.test", "", false},
		{"myhome.box.test.evil.org", "", false},
		{"xbox.test", "", false},
		{"", "", false},
	} {
		name, ok := GatewayName(tc.host, "box.test", valid)
		if name != tc.name || ok != tc.ok {
			t.Errorf("%q: got %q %v, want %q %v", tc.host, name, ok, tc.name, tc.ok)
		}
	}
}
