package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/config"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/forward"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/localapi"
)

const forwardUsage = `usage: gateway-agent forward <list|add|rm> [flags] [arguments]

  list [-json]                       the running agent's forwardings
  add [-json] LOCAL GATEWAY IP REMOTE
                                     open a forwarding: connections to LOCAL
                                     (a port on 127.0.0.1, or host:port) go to
                                     IP:REMOTE behind the gateway GATEWAY
  rm LOCAL                           close the forwarding listening on LOCAL

The flags are the agent's configuration flags (the API's address is
api_listen, its key STATE_DIR/api.key); flags come before the arguments.
`

func cmdForward(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, forwardUsage)
		return 2
	}
	sub, args := args[0], args[1:]
	want := map[string]int{"list": 0, "add": 4, "rm": 1}
	n, ok := want[sub]
	if !ok {
		if sub == "-h" || sub == "help" {
			fmt.Fprint(stdout, forwardUsage)
			return 0
		}
		fmt.Fprintf(stderr, "gateway-agent forward: unknown subcommand %q\n\n%s", sub, forwardUsage)
		return 2
	}
	var asJSON bool
	fs := flag.NewFlagSet("gateway-agent forward "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&asJSON, "json", false, "print the answer as JSON")
	cfg, rest, err := config.Load(fs, args, os.Environ())
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "gateway-agent:", err)
		return 2
	}
	if len(rest) != n {
		fmt.Fprintf(stderr, "gateway-agent forward %s: want %d arguments, got %d\n\n%s", sub, n, len(rest), forwardUsage)
		return 2
	}
	c, err := apiClient(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "gateway-agent:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	switch sub {
	case "list":
		l, err := c.List(ctx)
		if err != nil {
			return apiFailed(stderr, err)
		}
		if asJSON {
			return printJSON(stdout, localapi.List{Forwards: l})
		}
		printForwards(stdout, l)
	case "add":
		remote, err := strconv.ParseUint(rest[3], 10, 16)
		if err != nil {
			fmt.Fprintf(stderr, "gateway-agent forward add: REMOTE %q is not a port\n", rest[3])
			return 2
		}
		info, err := c.Add(ctx, forward.Spec{Local: rest[0], Gateway: rest[1], IP: rest[2], Remote: uint16(remote)})
		if err != nil {
			return apiFailed(stderr, err)
		}
		if asJSON {
			return printJSON(stdout, info)
		}
		fmt.Fprintf(stdout, "forwarding %s to %s behind %s\n", info.Local, net.JoinHostPort(info.IP, strconv.Itoa(int(info.Remote))), info.Gateway)
	case "rm":
		info, err := c.Remove(ctx, rest[0])
		if err != nil {
			return apiFailed(stderr, err)
		}
		fmt.Fprintf(stdout, "closed %s (was to %s behind %s)\n", info.Local, net.JoinHostPort(info.IP, strconv.Itoa(int(info.Remote))), info.Gateway)
	}
	return 0
}

// apiClient reaches the running agent's API on loopback with the key from
// the state directory.
func apiClient(cfg config.Config) (*localapi.Client, error) {
	if cfg.APIListen == "" {
		return nil, errors.New("the local api is turned off (api_listen is empty)")
	}
	if err := localapi.CheckListen(cfg.APIListen); err != nil {
		return nil, err
	}
	key, err := localapi.ReadKey(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("%w (the agent creates it in its state directory at start; run as the agent's user)", err)
	}
	return &localapi.Client{Base: "http://" + cfg.APIListen, Key: key}, nil
}

func apiFailed(stderr io.Writer, err error) int {
	var ae *localapi.APIError
	if errors.As(err, &ae) {
		fmt.Fprintf(stderr, "gateway-agent: refused: %s (%s)\n", ae.Message, ae.Name)
		return 1
	}
	fmt.Fprintln(stderr, "gateway-agent:", err)
	return 1
}

func printJSON(w io.Writer, v any) int {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return 1
	}
	return 0
}

func printForwards(w io.Writer, l []forward.Info) {
	if len(l) == 0 {
		fmt.Fprintln(w, "no forwardings")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LOCAL\tGATEWAY\tDESTINATION\tORIGIN\tACTIVE\tOPENED\tREFUSED\tLAST REFUSAL")
	for _, f := range l {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", f.Local, f.Gateway, net.JoinHostPort(f.IP, strconv.Itoa(int(f.Remote))),
			f.Origin, f.Active, f.Opened, f.Refused, f.LastError)
	}
	_ = tw.Flush()
}
