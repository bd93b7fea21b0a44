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
		{"test", "", false},
		{"myhome.box.test:", "myhome", true},
		{"[myhome.box.test]:443", "myhome", true},
		{"a:b.box.test", "", false},
		{"myhome.boxxtest", "", false},
	} {
		name, ok := GatewayName(tc.host, "box.test", valid)
		if name != tc.name || ok != tc.ok {
			t.Errorf("%q: got %q %v, want %q %v", tc.host, name, ok, tc.name, tc.ok)
		}
	}
}

// TestGatewayNameAllocs: the ingress asks for every new connection's SNI.
func TestGatewayNameAllocs(t *testing.T) {
	valid := func(n string) bool { return n != "api" }
	if n := testing.AllocsPerRun(100, func() {
		if _, ok := GatewayName("myhome.box.test", "box.test", valid); !ok {
			t.Fatal("myhome.box.test not found")
		}
	}); n != 0 {
		t.Errorf("GatewayName allocates %v times per call, want 0", n)
	}
}
