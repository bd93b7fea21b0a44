package gatehouseapp

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestTokenSealKey(t *testing.T) {
	t.Setenv("GATEHOUSE_TEST_SEAL", hex.EncodeToString(make([]byte, 32)))
	a := &App{logger: zap.NewNop(), TokenSealKey: "{env.GATEHOUSE_TEST_SEAL}"}
	if err := a.provisionSealKey(caddy.NewReplacer()); err != nil || a.sealer == nil {
		t.Fatalf("sealer %v, err %v", a.sealer, err)
	}
	if a.TokenSealKey != "" {
		t.Error("the key stays in the config struct")
	}
	core, logs := observer.New(zap.InfoLevel)
	off := &App{logger: zap.New(core), TokenSealKey: "{env.GATEHOUSE_TEST_UNSET}"}
	if err := off.provisionSealKey(caddy.NewReplacer()); err != nil || off.sealer != nil {
		t.Fatalf("without a key: sealer %v, err %v", off.sealer, err)
	}
	if logs.FilterMessageSnippet("PageKite").Len() != 1 {
		t.Errorf("no log line says PageKite is off: %v", logs.All())
	}
	bad := &App{logger: zap.NewNop(), TokenSealKey: "0123"}
	if err := bad.provisionSealKey(caddy.NewReplacer()); err == nil || !strings.Contains(err.Error(), "32 bytes") {
		t.Errorf("short key: %v", err)
	}
	a2 := new(App)
	if err := a2.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`gatehouse {
		zone box.example.org
		token_seal_key {env.GATEHOUSE_SEAL_KEY}
	}`)); err != nil || a2.TokenSealKey != "{env.GATEHOUSE_SEAL_KEY}" {
		t.Fatalf("parsed %q, %v", a2.TokenSealKey, err)
	}
}
