package gatehouseapp

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func parse(t *testing.T, input string) (*App, error) {
	t.Helper()
	app := new(App)
	err := app.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
	return app, err
}

func TestCaddyfileFull(t *testing.T) {
	app, err := parse(t, `gatehouse {
		zone box.example.org
		storage postgres {env.GATEHOUSE_PG}
		expire_after 7d
		reserved admin status
		max_records 10
		rate_limit subscribe 2m 5
		rate_limit email 1h 1
		dns {
			listen udp/:53 tcp/:53
			nameserver ns1.box.example.org 203.0.113.10 2001:db8::10
			tunnel_address 203.0.113.10
			api_address 203.0.113.11
			host www 203.0.113.12
			caa 0 issue letsencrypt.org
			mx 10 mail.example.org
			txt "v=spf1 -all"
			contact hostmaster@example.org
			negative_ttl 30s
			steered_ttl 10s
			transfer_allow 192.0.2.53 10.0.0.0/8
			rrl 50 3s 4
			rrl prefix 24 48
			soa_refresh 3h
			edns_buf_size 1400
			tcp_idle_timeout 3s
			tcp_max_conns 512
			tcp_max_conns_per_client 8
		}
		email {
			smtp smtp.example.org:587
			from "Gatehouse <noreply@example.org>"
			tls starttls
			timeout 10s
		}
		forward {
			allow gw2 gw1 22 80
			allow * public
			open_timeout 5s
		}
		tunnel {
			keepalive_interval 5s
			keepalive_timeout 20s
			max_streams 100
			accept_backlog 64
		}
	}`)
	if err != nil {
		t.Fatal(err)
	}
	var storage struct{ Driver, DSN string }
	if err := json.Unmarshal(app.StorageRaw, &storage); err != nil || app.Zone != "box.example.org" ||
		storage.Driver != "postgres" || storage.DSN != "{env.GATEHOUSE_PG}" {
		t.Fatalf("zone/storage: %+v %s", app, app.StorageRaw)
	}
	if time.Duration(app.ExpireAfter) != 7*24*time.Hour || app.MaxRecords != 10 || strings.Join(app.Reserved, ",") != "admin,status" {
		t.Fatalf("policy: %+v", app)
	}
	if app.RateLimits.Subscribe.Burst != 5 || time.Duration(app.RateLimits.Email.Every) != time.Hour || app.RateLimits.Reclaim != nil {
		t.Fatalf("rate limits: %+v", app.RateLimits)
	}
	d := app.DNS
	if len(d.Listen) != 2 || len(d.Nameservers[0].Addrs) != 2 || d.TunnelAddrs[0].String() != "203.0.113.10" ||
		d.Hosts[0].Name != "www" || d.CAA[0].Tag != "issue" || d.MX[0].Preference != 10 || d.TXT[0] != "v=spf1 -all" ||
		d.TransferAllow[0].String() != "192.0.2.53/32" || d.RRL.ResponsesPerSecond != 50 || d.RRL.Slip != 4 ||
		d.RRL.IPv4PrefixLen != 24 || d.RRL.IPv6PrefixLen != 48 || d.SOA.Refresh != 3*time.Hour || d.EDNSBufSize != 1400 ||
		d.SOA.RName != "hostmaster@example.org" || d.TTL.Steered != 10*time.Second ||
		time.Duration(d.TCPIdleTimeout) != 3*time.Second || d.TCPMaxConns != 512 || d.TCPMaxConnsPerClient != 8 {
		t.Fatalf("dns: %+v", d)
	}
	if app.Email.SMTP != "smtp.example.org:587" || app.Email.From != "Gatehouse <noreply@example.org>" {
		t.Fatalf("email: %+v", app.Email)
	}
	if app.Tunnel.KeepAliveInterval != 5*time.Second || app.Tunnel.MaxStreams != 100 || app.Tunnel.AcceptBacklog != 64 {
		t.Fatalf("tunnel: %+v", app.Tunnel)
	}
	if f := app.Forward; len(f.Rules) != 2 || f.Rules[0].Ports[1] != 80 || f.Rules[1].From != "*" || time.Duration(f.OpenTimeout) != 5*time.Second {
		t.Fatalf("forward: %+v", app.Forward)
	}
	// The Caddyfile only fills the JSON config: it round-trips.
	b, err := json.Marshal(app)
	if err != nil {
		t.Fatal(err)
	}
	var back App
	if err := json.Unmarshal(b, &back); err != nil || back.DNS.RRL.Window != 3*time.Second || back.DNS.SOA.Minimum != 30*time.Second ||
		back.DNS.TCPMaxConnsPerClient != 8 || string(back.StorageRaw) != string(app.StorageRaw) {
		t.Fatalf("JSON round trip: %v %s", err, b)
	}
}

func TestCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct{ name, input, want string }{
		{"unknown option", `gatehouse { colour blue }`, "unrecognized gatehouse option"},
		{"argument on the option", `gatehouse x { }`, "wrong argument count"},
		{"storage driver", `gatehouse { storage mysql x }`, "unknown driver"},
		{"storage arity", `gatehouse { storage sqlite }`, "want sqlite"},
		{"duration", `gatehouse { expire_after soon }`, "expire_after"},
		{"rate limit group", `gatehouse { rate_limit ping 1m 5 }`, "unknown endpoint group"},
		{"rate limit burst", `gatehouse { rate_limit email 1m 0 }`, "burst"},
		{"dns address", `gatehouse { dns { tunnel_address not-an-ip } }`, "not an IP address"},
		{"dns option", `gatehouse { dns { recursion yes } }`, "unrecognized dns option"},
		{"caa", `gatehouse { dns { caa 0 issue } }`, "caa"},
		{"rrl", `gatehouse { dns { rrl fast } }`, "rrl"},
		{"tcp bound", `gatehouse { dns { tcp_max_conns_per_client 0 } }`, "positive integer"},
		{"email incomplete", `gatehouse { email { smtp a:25 } }`, "smtp and from are required"},
		{"tunnel option", `gatehouse { tunnel { speed 1 } }`, "unrecognized tunnel option"},
		{"forward port", `gatehouse { forward { allow a b ssh } }`, "not a port"},
		{"forward arity", `gatehouse { forward { allow a } }`, "allow: want"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One directive a line, as a Caddyfile has them.
			input := strings.NewReplacer("{ ", "{\n", " }", "\n}").Replace(tc.input)
			_, err := parse(t, input)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		app  App
		want string
	}{
		{App{}, "zone is required"},
		{App{Zone: "z", ExpireAfter: -1}, "negative"},
	} {
		if err := tc.app.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.app, err, tc.want)
		}
	}
	dns := &DNSConfig{Listen: []string{"http/:53"}}
	if err := dns.validate("box.example.org"); err == nil {
		t.Error("a DNS listen address on a non-DNS network was accepted")
	}
}

// Storage is a guest module: an unknown driver fails at load, and a
// postgres store without a DSN fails its own validation.
func TestStorageModules(t *testing.T) {
	for _, tc := range []struct{ storage, want string }{
		{`{"driver":"etcd"}`, "gatehouse.storage.etcd"},
		{`{"driver":"postgres"}`, "needs a DSN"},
		{`{"driver":"postgres","dsn":"{env.GATEHOUSE_UNSET_FOR_TEST}"}`, "needs a DSN"},
	} {
		cfg := `{"admin":{"disabled":true},"apps":{"gatehouse":{"zone":"box.test","storage":` + tc.storage + `}}}`
		if err := caddy.Validate(mustConfig(t, cfg)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.storage, err, tc.want)
		}
	}
}

// A JSON config written before storage became a guest module (the same
// shape, "driver" being the inline key) still loads, and opens the file.
func TestStorageOldJSONShapeLoads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "registry.db")
	cfg := `{"admin":{"disabled":true},"apps":{"gatehouse":{"zone":"box.test","storage":{"driver":"sqlite","path":` + strconv.Quote(path) + `}}}}`
	if err := caddy.Validate(mustConfig(t, cfg)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the sqlite store was not opened at its path: %v", err)
	}
}

func mustConfig(t *testing.T, s string) *caddy.Config {
	t.Helper()
	var cfg caddy.Config
	if err := json.Unmarshal([]byte(s), &cfg); err != nil {
		t.Fatal(err)
	}
	return &cfg
}

func TestCaddyfileCluster(t *testing.T) {
	app, err := parse(t, `gatehouse {
		zone box.example.org
		storage postgres {env.GATEHOUSE_PG}
		cluster {
			name {env.NODE_NAME}
			public_addresses 203.0.113.10 2001:db8::10
			listen tcp/:7443
			advertise 10.0.0.1:7443
			lease 3s
			certificate node.crt node.key
			ca cluster-ca.crt
		}
	}`)
	if err != nil {
		t.Fatal(err)
	}
	want := ClusterConfig{Name: "{env.NODE_NAME}", PublicAddresses: []string{"203.0.113.10", "2001:db8::10"},
		Listen: "tcp/:7443", Advertise: "10.0.0.1:7443", Lease: caddy.Duration(3 * time.Second),
		CertFile: "node.crt", KeyFile: "node.key", CAFile: "cluster-ca.crt"}
	if got := app.Cluster; got == nil || got.Name != want.Name || strings.Join(got.PublicAddresses, " ") != "203.0.113.10 2001:db8::10" ||
		got.Listen != want.Listen || got.Advertise != want.Advertise || got.Lease != want.Lease ||
		got.CertFile != want.CertFile || got.KeyFile != want.KeyFile || got.CAFile != want.CAFile || got.PKICA != "" {
		t.Fatalf("cluster %+v, want %+v", got, want)
	}
	for _, bad := range []string{
		"cluster {\n\tname\n}",
		"cluster {\n\tcertificate only-one\n}",
		"cluster {\n\tlease soon\n}",
		"cluster {\n\tpublic_addresses\n}",
		"cluster {\n\tcolour blue\n}",
		"cluster arg {\n}",
	} {
		if _, err := parse(t, "gatehouse {\n"+bad+"\n}"); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// The cluster section's checks, before anything joins: the postgres
// storage is required, and the listen, advertise and certificate options
// must make sense together.
func TestClusterProvisionRefusals(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	repl := caddy.NewReplacer()
	ok := ClusterConfig{Name: "node-1", Listen: "127.0.0.1:7443", CertFile: "x.crt", KeyFile: "x.key", CAFile: "ca.crt"}
	for _, tc := range []struct {
		name string
		edit func(c *ClusterConfig)
		dsn  string
		want string
	}{
		{"sqlite", func(*ClusterConfig) {}, "", "needs the postgres storage"},
		{"no name", func(c *ClusterConfig) { c.Name = "" }, "x", "name is required"},
		{"bad address", func(c *ClusterConfig) { c.PublicAddresses = []string{"example.org"} }, "x", "public address"},
		{"port range", func(c *ClusterConfig) { c.Listen = "127.0.0.1:7443-7444" }, "x", "one TCP port"},
		{"no host to advertise", func(c *ClusterConfig) { c.Listen = ":7443" }, "x", "advertise is required"},
		{"both cert kinds", func(c *ClusterConfig) { c.PKICA = "local" }, "x", "either"},
		{"half the files", func(c *ClusterConfig) { c.CAFile = "" }, "x", "go together"},
		{"no certificate", func(c *ClusterConfig) { c.CertFile, c.KeyFile, c.CAFile = "", "", "" }, "x", "certificate is required"},
		{"missing files", func(*ClusterConfig) {}, "x", "link certificate"},
	} {
		c := ok
		tc.edit(&c)
		if _, err := c.provision(ctx, repl, tc.dsn, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestCaddyfileACMEDNSAndDomains(t *testing.T) {
	app, err := parse(t, `gatehouse {
		zone box.example.org
		acmedns_register
		domain_resolvers 127.0.0.1:5353 [::1]:53
		domain_recheck_interval 10m
	}`)
	if err != nil {
		t.Fatal(err)
	}
	if !app.ACMEDNSRegister || strings.Join(app.DomainResolvers, ",") != "127.0.0.1:5353,[::1]:53" ||
		time.Duration(app.DomainRecheckInterval) != 10*time.Minute || app.NoCustomDomains {
		t.Fatalf("parsed %+v", app)
	}
	if err := app.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	app, err = parse(t, `gatehouse {
		zone box.example.org
		custom_domains off
	}`)
	if err != nil || !app.NoCustomDomains || app.ACMEDNSRegister {
		t.Fatalf("custom_domains off: %+v, %v", app, err)
	}
	for _, bad := range []string{
		"acmedns_register yes", "domain_resolvers", "domain_recheck_interval", "custom_domains on",
	} {
		if _, err := parse(t, "gatehouse {\n zone z.test\n "+bad+"\n}"); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	app, err = parse(t, "gatehouse {\n zone z.test\n domain_resolvers resolver.example\n}")
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Validate(); err == nil {
		t.Error("Validate accepted a malformed resolver")
	}
}
