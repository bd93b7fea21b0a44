package gatehouseapp

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
)

func TestOperatorToken(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef-op"
	t.Setenv("GATEHOUSE_TEST_OPERATOR", token)
	a := &App{logger: zap.NewNop(), OperatorToken: "{env.GATEHOUSE_TEST_OPERATOR}"}
	if err := a.provisionOperator(caddy.NewReplacer()); err != nil {
		t.Fatal(err)
	}
	if a.OperatorToken != "" {
		t.Error("the token stays in the config struct")
	}
	if !a.IsOperator(token) {
		t.Error("the operator token is refused")
	}
	for _, wrong := range []string{"", token[:len(token)-1], token + "x", strings.ToUpper(token)} {
		if a.IsOperator(wrong) {
			t.Errorf("%q accepted", wrong)
		}
	}

	// An unset variable disables the operator; a short token is refused.
	off := &App{logger: zap.NewNop(), OperatorToken: "{env.GATEHOUSE_TEST_UNSET}"}
	if err := off.provisionOperator(caddy.NewReplacer()); err != nil || off.IsOperator("") || off.IsOperator(token) {
		t.Errorf("without a token: err %v", err)
	}
	short := &App{logger: zap.NewNop(), OperatorToken: "too-short"}
	if err := short.provisionOperator(caddy.NewReplacer()); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Errorf("short token: %v", err)
	}
}

func TestOperatorTokenCaddyfile(t *testing.T) {
	a := new(App)
	err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`gatehouse {
		zone box.example.org
		operator_token {env.GATEHOUSE_OPERATOR_TOKEN}
	}`))
	if err != nil || a.OperatorToken != "{env.GATEHOUSE_OPERATOR_TOKEN}" {
		t.Fatalf("parsed %q, %v", a.OperatorToken, err)
	}
	err = new(App).UnmarshalCaddyfile(caddyfile.NewTestDispenser(`gatehouse {
		operator_token
	}`))
	if err == nil {
		t.Fatal("operator_token without a value accepted")
	}
}
