package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestForwardingSettings(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.json")
	if err := os.WriteFile(file, []byte(`{"cloud": "https://api.box.test",
		"forwards": [{"local": "2022", "gateway": "gw1", "ip": "192.168.10.12", "remote": 22}],
		"forward_allow": [{"to": ["192.168.1.0/24", "10.0.0.5"], "ports": [22, "8000-8100"], "from": ["gw2"]}],
		"forward_wait": "2s"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := load(t, []string{"-config", file,
		"-forwards", `[{"local": "127.0.0.1:3306", "gateway": "gw3", "ip": "10.0.0.7", "remote": 3306}]`,
		"-forwards", `[{"local": "3307", "gateway": "gw3", "ip": "10.0.0.8", "remote": 3306}]`},
		[]string{`GATEHOUSE_AGENT_FORWARD_ALLOW=[{"to": ["fd00::/64"], "ports": ["1-65535"]}]`, "GATEHOUSE_AGENT_FORWARD_DIAL_TIMEOUT=3s"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// The first flag replaces the file's list, a repeated one adds up; the
	// environment replaces the file.
	if len(cfg.Forwards) != 2 || cfg.Forwards[0].Gateway != "gw3" || cfg.Forwards[1].ListenAddr() != "127.0.0.1:3307" {
		t.Fatalf("forwards %+v", cfg.Forwards)
	}
	if len(cfg.ForwardAllow) != 1 || cfg.ForwardAllow[0].To[0] != "fd00::/64" {
		t.Fatalf("forward_allow %+v", cfg.ForwardAllow)
	}
	if time.Duration(cfg.ForwardDialTimeout) != 3*time.Second || time.Duration(cfg.ForwardWait) != 2*time.Second || cfg.APIListen != "127.0.0.1:8091" {
		t.Fatalf("durations and api: %+v", cfg)
	}
}

func TestForwardingValidation(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"-api-listen", "0.0.0.0:8091"}, "loopback"},
		{[]string{"-api-listen", ":8091"}, "loopback"},
		{[]string{"-forwards", `[{"local": "2022", "gateway": "gw1", "ip": "host", "remote": 22}]`}, "forwards[0]"},
		{[]string{"-forwards", `[{"local": "2022", "gateway": "gw1", "ip": "10.0.0.1", "remote": 22}, {"local": "127.0.0.1:2022", "gateway": "gw2", "ip": "10.0.0.1", "remote": 22}]`}, "used twice"},
		{[]string{"-forward-allow", `[{"to": ["10.0.0.0/8"]}]`}, "ports"},
		{[]string{"-forward-dial-timeout", "0s"}, "forward_dial_timeout"},
	} {
		cfg, err := load(t, append([]string{"-cloud", "https://api.box.test"}, tc.args...), nil)
		if err == nil {
			_, err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.err)
		}
	}
	// A flag that is not JSON is refused when read.
	if _, err := load(t, []string{"-forwards", "2022=gw1"}, nil); err == nil || !strings.Contains(err.Error(), "JSON array") {
		t.Errorf("non-JSON forwards: %v", err)
	}
	// Unknown keys in a forwarding are mistakes, not ignored.
	if _, err := load(t, []string{"-forward-allow", `[{"to": ["10.0.0.1"], "port": [22]}]`}, nil); err == nil {
		t.Error("unknown field accepted")
	}
}
