// Package gatehousecmd is the `caddy gatehouse import-registration-server`
// subcommand: it moves the gateways of an original WebThings registration
// server into the registry, with the store and keys the Caddy config
// names (the logic is the plain package modules/registry/importer). The
// `caddy gatehouse` command itself is registered by gatehouseadmin, which
// adds this subcommand beside the operator's others.
package gatehousecmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/gatehouse-project/gatehouse/modules/caddy/gatehouseapp"
	"github.com/gatehouse-project/gatehouse/modules/registry/importer"
)

// ErrRowsSkipped: the import finished but left rows out (exit status 1,
// so that a script notices; a second run after fixing them is safe).
var ErrRowsSkipped = errors.New("some rows were skipped")

// ImportCommand is the import-registration-server subcommand. It reads
// --config and --adapter from its parent's persistent flags.
func ImportCommand() *cobra.Command {
	var from string
	cmd := &cobra.Command{
		Use:   "import-registration-server --from sqlite:PATH|postgres:DSN [--config FILE] [--adapter NAME]",
		Short: "Imports the gateways of an original WebThings registration server",
		Long: `Reads the database of an original WebThings registration server (SQLite or
PostgreSQL, read only) and registers its gateways in the registry of the config's
gatehouse app: names (of the app's zone), tokens (hashed, and sealed when
token_seal_key is set), emails with their verified and opt-out flags, and modes.
Gateways keep working unchanged against the new cloud. Running it again is
safe: gateways already imported are left as they are. A row it cannot take is
reported and skipped. Run it before starting the cloud, or restart the cloud
after it when the registry is SQLite.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" {
				return fmt.Errorf("--from is required: %w", importer.ErrBadSource)
			}
			config, _ := cmd.Flags().GetString("config")
			adapter, _ := cmd.Flags().GetString("adapter")
			cfg, _, _, err := caddycmd.LoadConfig(config, adapter)
			if err != nil {
				return fmt.Errorf("loading the config: %w", err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Hour)
			defer cancel()
			return runImport(ctx, cmd.OutOrStdout(), cfg, from)
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "the original server's database: sqlite:PATH or postgres:DSN")
	return cmd
}

func runImport(ctx context.Context, out io.Writer, cfg []byte, from string) (err error) {
	if cfg == nil {
		return errors.New("no config: give --config, or run where ./Caddyfile is")
	}
	off, err := gatehouseapp.OpenOffline(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, off.Store.Close()) }()
	src, err := importer.Open(from)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, src.Close()) }()
	if off.Sealer == nil {
		fmt.Fprintln(out, "note: no token_seal_key in the config: tokens are stored hashed only, and each is sealed when its gateway next presents it")
	}
	rep, err := importer.Import(ctx, src, off.Store, importer.Options{Zone: off.Zone, Names: off.Names, Sealer: off.Sealer})
	if rep != nil {
		for _, n := range rep.Notes {
			fmt.Fprintf(out, "note: %s: %s\n", n.Row, n.Reason)
		}
		for _, s := range rep.Skipped {
			fmt.Fprintf(out, "skipped: %s: %s\n", s.Row, s.Reason)
		}
		fmt.Fprintf(out, "imported %d, already present %d, skipped %d\n", rep.Imported, rep.Unchanged, len(rep.Skipped))
	}
	if err != nil {
		return err
	}
	if len(rep.Skipped) > 0 {
		return fmt.Errorf("%d rows: %w", len(rep.Skipped), ErrRowsSkipped)
	}
	return nil
}
