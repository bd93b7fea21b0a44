package gatehouseadmin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/gatehouse-project/gatehouse/modules/caddy/gatehousecmd"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/gatehouse-project/gatehouse/modules/adminapi"
	"github.com/gatehouse-project/gatehouse/modules/apierror"
	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/backup"
	"github.com/gatehouse-project/gatehouse/modules/registry/pgstore"
	"github.com/gatehouse-project/gatehouse/modules/registry/sqlitestore"
)

// ErrStoreSpec: a --store, --from or --to value that names no store.
var ErrStoreSpec = errors.New("a store is sqlite:PATH or postgres:DSN")

func command() caddycmd.Command {
	return caddycmd.Command{
		Name:  "gatehouse",
		Usage: "list|show|disable|enable|delete|rotate-token|reserve|release|reserved|stats|export|import|migrate",
		Short: "Manages the Gatehouse registry of a running cloud",
		Long: `
Manages the gateways of a running Gatehouse cloud through Caddy's admin
API (the address from --address, or from the config as 'caddy reload'
finds it), or, for export, import and migrate with --store/--from/--to,
a registry store directly while no cloud uses it.`,
		CobraFunc: func(cmd *cobra.Command) {
			pf := cmd.PersistentFlags()
			pf.String("address", "", "the admin API's address")
			pf.StringP("config", "c", "", "configuration file to find the admin address in")
			pf.StringP("adapter", "a", "", "name of the config adapter")
			pf.Bool("json", false, "print JSON instead of tables")
			for _, sub := range subcommands() {
				cmd.AddCommand(sub)
			}
			cmd.AddCommand(gatehousecmd.ImportCommand())
		},
	}
}

// client talks to the admin API.
type client struct {
	addr string
	json bool
	out  io.Writer
}

func newClient(cmd *cobra.Command) (*client, error) {
	f := cmd.Flags()
	address, _ := f.GetString("address")
	config, _ := f.GetString("config")
	adapter, _ := f.GetString("adapter")
	asJSON, _ := f.GetBool("json")
	addr, err := caddycmd.DetermineAdminAPIAddress(address, nil, config, adapter)
	if err != nil {
		return nil, fmt.Errorf("find the admin address: %w", err)
	}
	return &client{addr: addr, json: asJSON, out: cmd.OutOrStdout()}, nil
}

// do sends one request and decodes the JSON answer into v (unless nil).
func (c *client) do(method, uri string, body io.Reader, v any) error {
	resp, err := caddycmd.AdminAPIRequest(c.addr, method, uri, nil, body)
	if err != nil {
		return apiError(err)
	}
	defer resp.Body.Close()
	if v == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("read the answer of %s %s: %w", method, uri, err)
	}
	return nil
}

// apiError turns Caddy's "HTTP 404: {json}" into the API's reason.
func apiError(err error) error {
	s := err.Error()
	i := strings.IndexByte(s, '{')
	if i < 0 {
		return err
	}
	var b apierror.Body
	if json.Unmarshal([]byte(s[i:]), &b) != nil || b.Error == "" {
		return err
	}
	return fmt.Errorf("%s: %s", b.Error, b.Reason)
}

func (c *client) print(v any, table func(w *tabwriter.Writer)) error {
	if c.json {
		enc := json.NewEncoder(c.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	table(w)
	return w.Flush()
}

func gatewayRows(w *tabwriter.Writer, gs []adminapi.Gateway) {
	fmt.Fprintln(w, "NAME\tMODE\tSTATE\tLAST PING\tPUBLIC\tLOCAL\tEMAIL\tCREATED")
	for _, g := range gs {
		state := "offline"
		switch {
		case g.Disabled:
			state = "disabled"
		case g.Expired:
			state = "expired"
		case g.Online && len(g.OnlineOn) > 0:
			state = "online@" + strings.Join(g.OnlineOn, ",")
		case g.Online:
			state = "online@" + g.Node
		}
		last := "never"
		if g.LastPing != nil {
			last = g.LastPing.Format(time.RFC3339)
		}
		public := strings.TrimSpace(g.PublicV4 + " " + g.PublicV6)
		var local []string
		for _, a := range g.LocalAddrs {
			local = append(local, a.String())
		}
		email := g.Email
		if email != "" && !g.EmailVerified {
			email += " (unverified)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.Name, g.Mode, state, last, orDash(public),
			orDash(strings.Join(local, " ")), orDash(email), g.Created.Format(time.RFC3339))
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func subcommands() []*cobra.Command {
	list := &cobra.Command{
		Use:   "list",
		Short: "Lists and searches gateways, a page at a time (--all for every page)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			q := url.Values{}
			for _, k := range []string{"name", "email", "addr", "mode", "expired", "disabled", "online", "after", "limit"} {
				if v, _ := cmd.Flags().GetString(k); v != "" {
					q.Set(k, v)
				}
			}
			all, _ := cmd.Flags().GetBool("all")
			var out adminapi.List
			for page := 1; ; page++ {
				var l adminapi.List
				if err := c.do(http.MethodGet, adminapi.Prefix+"gateways?"+q.Encode(), nil, &l); err != nil {
					return err
				}
				out.Gateways = append(out.Gateways, l.Gateways...)
				out.Next = l.Next
				if !all || l.Next == "" {
					break
				}
				// Long listings show progress where the table will not.
				fmt.Fprintf(cmd.ErrOrStderr(), "\r%d gateways…", len(out.Gateways))
				q.Set("after", l.Next)
			}
			if all {
				fmt.Fprintf(cmd.ErrOrStderr(), "\r%d gateways\n", len(out.Gateways))
			}
			return c.print(out, func(w *tabwriter.Writer) {
				gatewayRows(w, out.Gateways)
				if out.Next != "" {
					fmt.Fprintf(w, "(more: --after %s, or --all)\n", out.Next)
				}
			})
		},
	}
	lf := list.Flags()
	lf.String("name", "", "names containing this")
	lf.String("email", "", "owners' addresses containing this")
	lf.String("addr", "", "public or local IP address")
	lf.String("mode", "", "tunnel or dynamic")
	lf.String("expired", "", "true or false")
	lf.String("disabled", "", "true or false")
	lf.String("online", "", "true or false (on this node; in a cluster, on any node)")
	lf.String("after", "", "start after this name")
	lf.String("limit", "", "page size (default 100, at most 1000)")
	lf.Bool("all", false, "fetch every page")

	show := nameCommand("show", "Shows one gateway", http.MethodGet, "", func(c *client, v map[string]any) error {
		return c.printGateway(v)
	})
	disable := nameCommand("disable", "Disables a gateway: NXDOMAIN, tunnel closed, token refused, name kept", http.MethodPost, "/disable", (*client).printGateway)
	enable := nameCommand("enable", "Enables a disabled gateway", http.MethodPost, "/enable", (*client).printGateway)
	rotate := nameCommand("rotate-token", "Gives a gateway a new token, printed once; the old one stops working", http.MethodPost, "/rotate-token",
		func(c *client, v map[string]any) error {
			return c.print(v, func(w *tabwriter.Writer) { fmt.Fprintf(w, "%v\n", v["token"]) })
		})
	del := nameCommand("delete", "Deletes a gateway and its records; its name becomes free", http.MethodDelete, "",
		func(c *client, v map[string]any) error {
			return c.print(v, func(w *tabwriter.Writer) { fmt.Fprintf(w, "deleted %v\n", v["deleted"]) })
		})
	reserve := reservedCommand("reserve", "Reserves a name so that nobody can register it", http.MethodPut)
	release := reservedCommand("release", "Releases a name reserved with reserve", http.MethodDelete)
	reserved := &cobra.Command{
		Use: "reserved", Short: "Lists the names reserved at run time", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			var v map[string][]string
			if err := c.do(http.MethodGet, adminapi.Prefix+"reserved", nil, &v); err != nil {
				return err
			}
			return c.print(v, func(w *tabwriter.Writer) {
				for _, n := range v["reserved"] {
					fmt.Fprintln(w, n)
				}
			})
		},
	}
	stats := &cobra.Command{
		Use: "stats", Short: "Counts gateways: registered, online, expired, disabled, by mode", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			var st adminapi.Stats
			if err := c.do(http.MethodGet, adminapi.Prefix+"stats", nil, &st); err != nil {
				return err
			}
			return c.print(st, func(w *tabwriter.Writer) {
				where := st.Node
				if st.Held != nil {
					where = "cluster, asked " + st.Node
				}
				fmt.Fprintf(w, "registered\t%d\nonline (%s)\t%d\nexpired\t%d\ndisabled\t%d\nreserved names\t%d\n",
					st.Registered, where, st.Online, st.Expired, st.Disabled, st.Reserved)
				for _, n := range slices.Sorted(maps.Keys(st.Held)) {
					fmt.Fprintf(w, "held on %s\t%d\n", n, st.Held[n])
				}
				for m, n := range st.ByMode {
					fmt.Fprintf(w, "mode %s\t%d\n", m, n)
				}
			})
		},
	}
	return []*cobra.Command{list, show, disable, enable, del, rotate, reserve, release, reserved, stats,
		exportCommand(), importCommand(), migrateCommand()}
}

func (c *client) printGateway(v map[string]any) error {
	if c.json {
		return c.print(v, nil)
	}
	b, _ := json.Marshal(v)
	var g adminapi.Gateway
	if err := json.Unmarshal(b, &g); err != nil {
		return err
	}
	return c.print(nil, func(w *tabwriter.Writer) { gatewayRows(w, []adminapi.Gateway{g}) })
}

// nameCommand is a command on one gateway: METHOD /gatehouse/gateways/NAME+suffix.
func nameCommand(use, short, method, suffix string, print func(*client, map[string]any) error) *cobra.Command {
	return &cobra.Command{
		Use: use + " NAME", Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			var v map[string]any
			if err := c.do(method, adminapi.Prefix+"gateways/"+url.PathEscape(args[0])+suffix, nil, &v); err != nil {
				return err
			}
			return print(c, v)
		},
	}
}

func reservedCommand(use, short, method string) *cobra.Command {
	return &cobra.Command{
		Use: use + " NAME", Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			var v map[string]string
			if err := c.do(method, adminapi.Prefix+"reserved/"+url.PathEscape(args[0]), nil, &v); err != nil {
				return err
			}
			return c.print(v, func(w *tabwriter.Writer) {
				for k, n := range v {
					fmt.Fprintf(w, "%s %s\n", k, n)
				}
			})
		},
	}
}

// openStore opens sqlite:PATH or postgres:DSN.
func openStore(ctx context.Context, spec string) (registry.BackupStore, error) {
	kind, arg, ok := strings.Cut(spec, ":")
	if !ok || arg == "" {
		return nil, fmt.Errorf("%w, not %q", ErrStoreSpec, spec)
	}
	switch kind {
	case "sqlite":
		if _, err := os.Stat(arg); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return sqlitestore.Open(ctx, arg)
	case "postgres", "postgresql":
		// postgres:postgres://… and postgres:host=… both work.
		return pgstore.Open(ctx, arg)
	}
	return nil, fmt.Errorf("%w, not %q", ErrStoreSpec, spec)
}

// progress prints "done/total" on stderr, at most ten times a second.
func progress(w io.Writer, what string) (func(done, total int), func()) {
	var last time.Time
	var shown bool
	return func(done, total int) {
			if time.Since(last) < 100*time.Millisecond && done < total {
				return
			}
			last, shown = time.Now(), true
			pct := 0
			if total > 0 {
				pct = done * 100 / total
			}
			fmt.Fprintf(w, "\r%s %d/%d rows (%d%%)", what, done, total, pct)
		}, func() {
			if shown {
				fmt.Fprintln(w)
			}
		}
}

func exportCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Writes the whole registry as JSON Lines (to --output or stdout)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			output, _ := cmd.Flags().GetString("output")
			spec, _ := cmd.Flags().GetString("store")
			out := cmd.OutOrStdout()
			if output != "" && output != "-" {
				// Written beside and renamed, so a failed export never
				// leaves a file that looks like a backup.
				f, err := os.CreateTemp(dirOf(output), ".gatehouse-export-*")
				if err != nil {
					return err
				}
				defer os.Remove(f.Name())
				defer f.Close()
				if err := runExport(cmd, spec, f); err != nil {
					return err
				}
				if err := f.Sync(); err != nil {
					return err
				}
				if err := f.Close(); err != nil {
					return err
				}
				return os.Rename(f.Name(), output)
			}
			return runExport(cmd, spec, out)
		},
	}
	cmd.Flags().StringP("output", "o", "", "file to write (default: stdout)")
	cmd.Flags().String("store", "", "read this store directly (sqlite:PATH or postgres:DSN) instead of the admin API")
	return cmd
}

func dirOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		return path[:i+1]
	}
	return "."
}

func runExport(cmd *cobra.Command, spec string, out io.Writer) error {
	if spec != "" {
		s, err := openStore(cmd.Context(), spec)
		if err != nil {
			return err
		}
		defer s.Close()
		tr, err := backup.Export(cmd.Context(), s, out)
		if err == nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "exported %d gateways, %d accounts, %d records, %d reserved names; checksum %s\n",
				tr.Counts.Gateways, tr.Counts.Accounts, tr.Counts.Records, tr.Counts.Reserved, tr.Checksum)
		}
		return err
	}
	c, err := newClient(cmd)
	if err != nil {
		return err
	}
	resp, err := caddycmd.AdminAPIRequest(c.addr, http.MethodGet, adminapi.Prefix+"export", nil, nil)
	if err != nil {
		return apiError(err)
	}
	defer resp.Body.Close()
	// Verify while copying: a stream cut by the server lacks its trailer.
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, pr)
		pr.CloseWithError(err)
		done <- err
	}()
	_, err = io.Copy(pw, resp.Body)
	pw.CloseWithError(err)
	if cerr := <-done; err == nil {
		err = cerr
	}
	return err
}

func importCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Reads a registry written by export (- for stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			force, _ := cmd.Flags().GetBool("force")
			spec, _ := cmd.Flags().GetString("store")
			in := io.Reader(cmd.InOrStdin())
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			if spec != "" {
				s, err := openStore(cmd.Context(), spec)
				if err != nil {
					return err
				}
				defer s.Close()
				show, end := progress(cmd.ErrOrStderr(), "imported")
				tr, inserted, err := backup.Import(cmd.Context(), s, in, backup.ImportOptions{Force: force, Progress: show})
				end()
				if err != nil {
					return fmt.Errorf("%w (inserted so far: %+v; run again with --force to finish)", err, inserted)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "inserted %+v of %+v; checksum %s verified\n", inserted, tr.Counts, tr.Checksum)
				return nil
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			var v map[string]any
			if err := c.do(http.MethodPost, adminapi.Prefix+"import?force="+fmt.Sprint(force), in, &v); err != nil {
				return err
			}
			return c.print(v, func(w *tabwriter.Writer) { fmt.Fprintf(w, "inserted %v\n", v["inserted"]) })
		},
	}
	cmd.Flags().Bool("force", false, "import into a registry that is not empty (keeps the rows it has)")
	cmd.Flags().String("store", "", "write this store directly (sqlite:PATH or postgres:DSN) instead of through the admin API")
	return cmd
}

func migrateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate --from sqlite:PATH --to postgres:DSN",
		Short: "Copies a registry from one store to another and verifies the copy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			from, _ := cmd.Flags().GetString("from")
			to, _ := cmd.Flags().GetString("to")
			force, _ := cmd.Flags().GetBool("force")
			if from == "" || to == "" {
				return fmt.Errorf("--from and --to are both needed: %w", ErrStoreSpec)
			}
			src, err := openStore(cmd.Context(), from)
			if err != nil {
				return fmt.Errorf("source: %w", err)
			}
			defer src.Close()
			dst, err := openStore(cmd.Context(), to)
			if err != nil {
				return fmt.Errorf("target: %w", err)
			}
			defer dst.Close()
			show, end := progress(cmd.ErrOrStderr(), "copied")
			rep, err := backup.Migrate(cmd.Context(), src, dst, backup.ImportOptions{Force: force, Progress: show})
			end()
			if err != nil {
				return fmt.Errorf("%w (inserted: %+v; run again with --force to resume)", err, rep.Inserted)
			}
			asJSON, _ := cmd.Flags().GetBool("json")
			c := &client{json: asJSON, out: cmd.OutOrStdout()}
			return c.print(rep, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "copied\t%d gateways, %d accounts, %d records, %d reserved names\n",
					rep.Inserted.Gateways, rep.Inserted.Accounts, rep.Inserted.Records, rep.Inserted.Reserved)
				fmt.Fprintf(w, "verified\t%d gateways, checksum %s\n", rep.Target.Counts.Gateways, rep.Target.Checksum)
			})
		},
	}
	cmd.Flags().String("from", "", "source store: sqlite:PATH or postgres:DSN")
	cmd.Flags().String("to", "", "target store: sqlite:PATH or postgres:DSN")
	cmd.Flags().Bool("force", false, "copy into a target that is not empty (resumes an interrupted migration)")
	return cmd
}
