package forward

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestPortRangeJSON(t *testing.T) {
	var got []PortRange
	if err := json.Unmarshal([]byte(`[22, "80", "8000-8100", " 443 "]`), &got); err != nil {
		t.Fatal(err)
	}
	want := []PortRange{{22, 22}, {80, 80}, {8000, 8100}, {443, 443}}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	b, _ := json.Marshal(got)
	if string(b) != `[22,80,"8000-8100",443]` {
		t.Fatalf("marshalled as %s", b)
	}
	for _, bad := range []string{`0`, `"0-5"`, `"9-8"`, `65536`, `"x"`, `"1-"`, `-1`, `"22-70000"`} {
		var r PortRange
		if err := json.Unmarshal([]byte(bad), &r); err == nil {
			t.Errorf("%s accepted as %v", bad, r)
		}
	}
}

func TestAllowListCompile(t *testing.T) {
	for _, tc := range []struct {
		json, err string
	}{
		{`[{"to":["192.168.1.0/24"],"ports":[22]}]`, ""},
		{`[{"to":["10.0.0.5","fd00::/64"],"ports":["1-65535"],"from":["gw2"]}]`, ""},
		{`[]`, ""},
		{`[{"ports":[22]}]`, `"to" is required`},
		{`[{"to":["10.0.0.1"]}]`, `"ports" is required`},
		{`[{"to":["10.0.0.0/33"],"ports":[22]}]`, "not a CIDR prefix"},
		{`[{"to":["gateway.lan"],"ports":[22]}]`, "not an address"},
		{`[{"to":["fe80::1%eth0"],"ports":[22]}]`, "zones"},
		{`[{"to":["10.0.0.1"],"ports":[22],"from":[""]}]`, "empty gateway name"},
	} {
		var l AllowList
		if err := json.Unmarshal([]byte(tc.json), &l); err != nil {
			t.Fatalf("%s: %v", tc.json, err)
		}
		_, err := l.Compile()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.json, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrInvalid)):
			t.Errorf("%s: error %v, want %q", tc.json, err, tc.err)
		}
	}
}

func TestAllowListMatching(t *testing.T) {
	var raw AllowList
	if err := json.Unmarshal([]byte(`[
		{"to": ["192.168.10.0/24"], "ports": [22, "8000-8100"]},
		{"to": ["10.0.0.5"], "ports": [5432], "from": ["GW2"]},
		{"to": ["fd00::/64"], "ports": [443]}
	]`), &raw); err != nil {
		t.Fatal(err)
	}
	l, err := raw.Compile()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		from, ip string
		port     uint16
		want     bool
	}{
		{"gw2", "192.168.10.12", 22, true},
		{"anyone", "192.168.10.255", 8000, true},
		{"anyone", "192.168.10.1", 8100, true},
		{"anyone", "192.168.10.1", 8101, false},
		{"anyone", "192.168.10.1", 23, false},
		{"anyone", "192.168.11.1", 22, false},
		{"anyone", "::ffff:192.168.10.12", 22, true}, // v4-mapped is the same host
		{"gw2", "10.0.0.5", 5432, true},
		{"Gw2", "10.0.0.5", 5432, true},
		{"gw3", "10.0.0.5", 5432, false}, // the rule is for gw2 only
		{"gw2", "10.0.0.6", 5432, false},
		{"gw2", "fd00::1", 443, true},
		{"gw2", "fd00:0:0:1::1", 443, false},
		{"gw2", "0.0.0.0", 22, false},
		{"gw2", "224.0.0.1", 22, false},
	} {
		if got := l.Allows(tc.from, netip.MustParseAddr(tc.ip), tc.port); got != tc.want {
			t.Errorf("%s → %s:%d: %v, want %v", tc.from, tc.ip, tc.port, got, tc.want)
		}
	}
	// Default deny.
	if (AllowList{}).Allows("gw2", netip.MustParseAddr("127.0.0.1"), 22) {
		t.Error("the empty allow-list allowed something")
	}
	// Even a rule for everything does not open the unspecified address.
	all, _ := AllowList{{To: []string{"0.0.0.0/0"}, Ports: []PortRange{{1, 65535}}}}.Compile()
	if all.Allows("gw2", netip.MustParseAddr("0.0.0.0"), 22) || !all.Allows("gw2", netip.MustParseAddr("127.0.0.1"), 22) {
		t.Error("0.0.0.0/0 rule")
	}
}

// The attack of issue 14: 0.0.0.0 listed (which never matches) and a
// remote gateway asking for it written IPv4-mapped, or the other addresses
// that name no single host written so. None may match, and a mapped rule
// means its IPv4 prefix.
func TestAllowListMappedAddressesNormalised(t *testing.T) {
	var raw AllowList
	if err := json.Unmarshal([]byte(`[
		{"to": ["0.0.0.0", "255.255.255.255", "224.0.0.0/4", "::"], "ports": ["1-65535"]},
		{"to": ["::ffff:192.168.20.0/120"], "ports": [22]}
	]`), &raw); err != nil {
		t.Fatal(err)
	}
	l, err := raw.Compile()
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"::ffff:0.0.0.0", "0.0.0.0", "::", "::ffff:255.255.255.255", "::ffff:224.0.0.1", "::ffff:0.1.2.3"} {
		if dest, ok := l.Check("gw2", netip.MustParseAddr(ip), 22); ok {
			t.Errorf("%s allowed, dialled as %s", ip, dest)
		}
	}
	for ip, want := range map[string]string{"192.168.20.7": "192.168.20.7", "::ffff:192.168.20.7": "192.168.20.7"} {
		if dest, ok := l.Check("gw2", netip.MustParseAddr(ip), 22); !ok || dest.String() != want {
			t.Errorf("%s: %v %s, want dialled as %s", ip, ok, dest, want)
		}
	}
}

func TestSpecValidate(t *testing.T) {
	for _, tc := range []struct {
		spec   Spec
		listen string
		err    string
	}{
		{Spec{Local: "2022", Gateway: "gw1", IP: "192.168.10.12", Remote: 22}, "127.0.0.1:2022", ""},
		{Spec{Local: "0.0.0.0:2022", Gateway: "gw1", IP: "fd00::1", Remote: 22}, "0.0.0.0:2022", ""},
		{Spec{Local: "[::1]:0", Gateway: "gw1", IP: "10.0.0.1", Remote: 22}, "[::1]:0", ""},
		{Spec{Gateway: "gw1", IP: "10.0.0.1", Remote: 22}, "", "local is required"},
		{Spec{Local: "example.com:22", Gateway: "gw1", IP: "10.0.0.1", Remote: 22}, "", "IP address or localhost"},
		{Spec{Local: "70000", Gateway: "gw1", IP: "10.0.0.1", Remote: 22}, "", "local"},
		{Spec{Local: "2022", IP: "10.0.0.1", Remote: 22}, "", "gateway is required"},
		{Spec{Local: "2022", Gateway: "gw1", IP: "host.lan", Remote: 22}, "", "ip"},
		{Spec{Local: "2022", Gateway: "gw1", IP: "10.0.0.1"}, "", "remote is required"},
	} {
		err := tc.spec.Validate()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%+v: %v", tc.spec, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrInvalid)):
			t.Errorf("%+v: error %v, want %q", tc.spec, err, tc.err)
		}
		if tc.listen != "" && tc.spec.ListenAddr() != tc.listen {
			t.Errorf("%+v listens on %s", tc.spec, tc.spec.ListenAddr())
		}
	}
}
