package gatehousedns

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/gatehouse-project/gatehouse/modules/dnsprovider"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	tests := []struct {
		name, input     string
		endpoint, token string
		wantErr         string
	}{
		{name: "block", input: `gatehouse {
			endpoint https://api.box.example.org
			token {env.GATEHOUSE_TOKEN}
		}`, endpoint: "https://api.box.example.org", token: "{env.GATEHOUSE_TOKEN}"},
		{name: "inline token", input: `gatehouse {env.GATEHOUSE_TOKEN} {
			endpoint {env.GATEHOUSE_ENDPOINT}
		}`, endpoint: "{env.GATEHOUSE_ENDPOINT}", token: "{env.GATEHOUSE_TOKEN}"},
		{name: "no endpoint", input: `gatehouse tok`, wantErr: "endpoint is required"},
		{name: "no token", input: `gatehouse {
			endpoint https://api.box.example.org
		}`, wantErr: "token is required"},
		{name: "token twice", input: `gatehouse tok {
			endpoint https://api.box.example.org
			token other
		}`, wantErr: "token already set"},
		{name: "endpoint twice", input: `gatehouse {
			endpoint https://a.example
			endpoint https://b.example
			token t
		}`, wantErr: "endpoint already set"},
		{name: "two inline args", input: `gatehouse https://api.box.example.org tok`, wantErr: "wrong argument count"},
		{name: "option without value", input: `gatehouse {
			endpoint
			token t
		}`, wantErr: "wrong argument count"},
		{name: "option with two values", input: `gatehouse {
			endpoint https://a.example https://b.example
			token t
		}`, wantErr: "wrong argument count"},
		{name: "unknown option", input: `gatehouse {
			endpoint https://a.example
			token t
			zone box.example.org
		}`, wantErr: `unrecognized gatehouse dns option "zone"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &Provider{new(dnsprovider.Provider)}
			err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Endpoint != tc.endpoint || p.Token != tc.token {
				t.Fatalf("got endpoint %q token %q, want %q %q", p.Endpoint, p.Token, tc.endpoint, tc.token)
			}
		})
	}
}

// The tls directive hands `dns gatehouse …` to the module, whose JSON keeps
// the placeholders: the token never lands in the saved config.
func TestTLSDirectiveAdapts(t *testing.T) {
	in := `myhome.box.example.org {
		tls {
			dns gatehouse {
				endpoint https://api.box.example.org
				token {env.GATEHOUSE_TOKEN}
			}
		}
		respond ok
	}`
	adapter := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}
	out, warnings, err := adapter.Adapt([]byte(in), nil)
	if err != nil {
		t.Fatalf("adapt: %v (warnings %v)", err, warnings)
	}
	var cfg struct {
		Apps struct {
			TLS struct {
				Automation struct {
					Policies []struct {
						Issuers []struct {
							Module     string `json:"module"`
							Challenges struct {
								DNS struct {
									Provider map[string]string `json:"provider"`
								} `json:"dns"`
							} `json:"challenges"`
						} `json:"issuers"`
					} `json:"policies"`
				} `json:"automation"`
			} `json:"tls"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	pols := cfg.Apps.TLS.Automation.Policies
	if len(pols) != 1 || len(pols[0].Issuers) == 0 {
		t.Fatalf("no automation policy with an issuer in %s", out)
	}
	got := pols[0].Issuers[0].Challenges.DNS.Provider
	want := map[string]string{"name": "gatehouse", "endpoint": "https://api.box.example.org", "token": "{env.GATEHOUSE_TOKEN}"}
	if len(got) != len(want) || got["name"] != want["name"] || got["endpoint"] != want["endpoint"] || got["token"] != want["token"] {
		t.Fatalf("provider config %v, want %v", got, want)
	}
}

func TestProvisionResolvesPlaceholders(t *testing.T) {
	t.Setenv("GATEHOUSE_TEST_ENDPOINT", "https://api.box.example.org")
	t.Setenv("GATEHOUSE_TEST_TOKEN", "s3cret")
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()

	p := &Provider{new(dnsprovider.Provider)}
	if err := json.Unmarshal([]byte(`{"endpoint":"{env.GATEHOUSE_TEST_ENDPOINT}","token":"{env.GATEHOUSE_TEST_TOKEN}"}`), p); err != nil {
		t.Fatal(err)
	}
	if err := p.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if p.Endpoint != "https://api.box.example.org" || p.Token != "s3cret" {
		t.Fatalf("after Provision: endpoint %q token %q", p.Endpoint, p.Token)
	}

	// An unset variable leaves the setting empty without failing, so that
	// a config can be validated without its secrets; the provider then
	// refuses to work.
	empty := &Provider{&dnsprovider.Provider{Endpoint: "https://api.box.example.org", Token: "{env.GATEHOUSE_TEST_UNSET}"}}
	if err := empty.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := empty.GetRecords(context.Background(), "box.example.org."); err == nil || !strings.Contains(err.Error(), "incomplete configuration") {
		t.Fatalf("a provider without a token answered %v", err)
	}
}

func TestModuleRegistered(t *testing.T) {
	info, err := caddy.GetModule("dns.providers.gatehouse")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := info.New().(*Provider); !ok {
		t.Fatalf("the module makes a %T", info.New())
	}
}
