package gatehouseapp

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// ParseSealKey resolves the token_seal_key setting (placeholders such as
// {env.X}) into a Sealer; nil, nil when the setting is empty or names an
// unset variable. The import subcommand shares it, so that imported
// tokens are sealed under the key the cloud will open them with.
func ParseSealKey(repl *caddy.Replacer, setting string) (*registry.Sealer, error) {
	s := repl.ReplaceAll(setting, "")
	if s == "" {
		return nil, nil
	}
	key, err := registry.ParseSealKey(s)
	if err != nil {
		return nil, fmt.Errorf("gatehouse: token_seal_key: %w", err)
	}
	return registry.NewSealer(key)
}

// provisionSealKey builds the token sealer and says in the log what its
// absence turns off: PageKite kites sign with the gateway's token, which
// the cloud keeps only sealed under this key.
func (a *App) provisionSealKey(repl *caddy.Replacer) error {
	sealer, err := ParseSealKey(repl, a.TokenSealKey)
	a.TokenSealKey = ""
	if err != nil {
		return err
	}
	a.sealer = sealer
	if sealer == nil {
		a.logger.Warn("no token_seal_key: PageKite is off (a kite's request goes to Caddy as plain text), because the cloud keeps no gateway token it could check a kite's signature with")
		return nil
	}
	a.logger.Info("token_seal_key set: gateways' tokens are kept sealed for PageKite")
	return nil
}
