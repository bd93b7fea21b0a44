// Command gateway-agent gives a home gateway behind NAT a public HTTPS name
// under a Gatehouse zone: it registers the gateway, obtains its certificate,
// keeps the tunnel to the cloud open, proxies to the gateway's web app and
// serves a setup page on the LAN.
//
//	gateway-agent run      run the agent (the service)
//	gateway-agent status   show the running agent's status
//	gateway-agent setup    choose the name, set the email, reclaim a name
//	gateway-agent forward  list, add or remove agent-to-agent forwardings
//	gateway-agent version  print the version
//
// Every command takes the configuration flags (-h lists them); see
// gateway-agent/README.md for the file and environment variables.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/agent"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/config"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/logging"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/setupcode"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/status"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

const usage = `usage: gateway-agent <command> [flags]

commands:
  run      run the agent
  status   show the running agent's status (or the last status file)
  setup    choose the gateway's name, set the owner's email, reclaim a name
  forward  list|add|rm agent-to-agent forwardings of the running agent
  version  print the version

"gateway-agent <command> -h" lists the flags.
`

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(args, stderr)
	case "status":
		return cmdStatus(args, stdout, stderr)
	case "setup":
		return cmdSetup(args, stdin, stdout, stderr)
	case "forward":
		return cmdForward(args, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "gateway-agent %s %s %s/%s\n", fullVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "gateway-agent: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// fullVersion is the build-time version, or the VCS revision of a dev build.
func fullVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return version
}

func loadConfig(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (config.Config, bool) {
	fs := flag.NewFlagSet("gateway-agent "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	if extra != nil {
		extra(fs)
	}
	cfg, rest, err := config.Load(fs, args, os.Environ())
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "gateway-agent:", err)
		}
		return cfg, false
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "gateway-agent %s: unexpected arguments %q\n", name, rest)
		return cfg, false
	}
	return cfg, true
}

func cmdRun(args []string, stderr io.Writer) int {
	cfg, ok := loadConfig("run", args, stderr, nil)
	if !ok {
		return 2
	}
	set, err := cfg.Validate()
	if err != nil {
		fmt.Fprintln(stderr, "gateway-agent:", err)
		return 2
	}
	log := logging.New(stderr, set.Level, cfg.LogFormat)
	a, err := agent.New(cfg, agent.Options{Version: fullVersion(), Logger: log})
	if err != nil {
		log.Error("starting", "error", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("gateway agent starting", "version", fullVersion(), "cloud", cfg.Cloud, "upstream", cfg.Upstream, "mode", cfg.Mode, "state_dir", cfg.StateDir)
	if err := a.Run(ctx); err != nil {
		log.Error("agent failed", "error", err)
		return 1
	}
	return 0
}

// localURL is the running agent's setup endpoint on loopback.
func localURL(cfg config.Config) (string, error) {
	if cfg.SetupListen == "" {
		return "", errors.New("the setup page is turned off (setup_listen is empty)")
	}
	host, port, err := net.SplitHostPort(cfg.SetupListen)
	if err != nil {
		return "", fmt.Errorf("setup_listen %q: %w", cfg.SetupListen, err)
	}
	switch host {
	case "", "0.0.0.0", "::":
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

var localClient = &http.Client{Timeout: 90 * time.Second}

func fetchStatus(cfg config.Config) (status.Status, error) {
	var st status.Status
	base, err := localURL(cfg)
	if err != nil {
		return st, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/status", nil)
	resp, err := localClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status endpoint answered %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	var asJSON bool
	cfg, ok := loadConfig("status", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print the status as JSON")
	})
	if !ok {
		return 2
	}
	st, err := fetchStatus(cfg)
	if err != nil {
		path := filepath.Join(cfg.StateDir, status.FileName)
		var ferr error
		st, ferr = status.Load(path)
		if ferr != nil {
			fmt.Fprintf(stderr, "gateway-agent: the agent is not answering (%v) and there is no status file (%v)\n", err, ferr)
			return 1
		}
		fmt.Fprintf(stderr, "the agent is not answering (%v): showing the status file of %s\n", err, st.Updated.Format(time.RFC3339))
	}
	if asJSON {
		_ = st.Write(stdout)
	} else {
		fmt.Fprint(stdout, st.Text())
		printSetupCode(stdout, cfg.StateDir)
	}
	return 0
}

// printSetupCode shows the setup code to whoever can read the state
// directory: on the device, never through the LAN's status endpoint.
func printSetupCode(w io.Writer, stateDir string) {
	code, err := setupcode.Read(stateDir)
	switch {
	case err == nil:
		fmt.Fprintf(w, "%-13s %s (the setup page asks for it)\n", "setup code:", setupcode.Format(code))
	case errors.Is(err, os.ErrPermission):
		fmt.Fprintf(w, "%-13s %s\n", "setup code:", "not readable by this user: run as the agent's user or root")
	case !errors.Is(err, os.ErrNotExist):
		fmt.Fprintf(w, "%-13s %v\n", "setup code:", err)
	}
}

type apiAnswer struct {
	OK     bool          `json:"ok"`
	Error  string        `json:"error"`
	Code   string        `json:"code"`
	Status status.Status `json:"status"`
}

func post(base, path string, body map[string]string) (apiAnswer, error) {
	var a apiAnswer
	b, _ := json.Marshal(body)
	resp, err := localClient.Post(base+path, "application/json", bytes.NewReader(b))
	if err != nil {
		return a, fmt.Errorf("the agent is not answering on %s (is it running?): %w", base, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		return a, fmt.Errorf("unexpected answer from the agent (%s)", resp.Status)
	}
	return a, nil
}

func cmdSetup(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var name, email, requestReclaim, reclaim, token, setupCode string
	var wait time.Duration
	cfg, ok := loadConfig("setup", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&name, "name", "", "choose this name for the gateway")
		fs.StringVar(&email, "email", "", "set the owner's email (a verification link is mailed)")
		fs.StringVar(&requestReclaim, "request-reclaim", "", "ask for a reclamation token for this name (mailed to its owner)")
		fs.StringVar(&reclaim, "reclaim", "", "reclaim this name (with -token)")
		fs.StringVar(&token, "token", "", "the reclamation token from the mail")
		fs.StringVar(&setupCode, "code", "", "the gateway's setup code (default: read from the state directory)")
		fs.DurationVar(&wait, "wait", 5*time.Minute, "how long to wait for a chosen name's certificate")
	})
	if !ok {
		return 2
	}
	base, err := localURL(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "gateway-agent:", err)
		return 1
	}
	if setupCode == "" {
		// On the device, as the agent's user or root, the code is there.
		setupCode, _ = setupcode.Read(cfg.StateDir)
	}
	s := &setupSession{base: base, out: stdout, wait: wait, code: setupCode}
	if name == "" && email == "" && requestReclaim == "" && reclaim == "" {
		return s.interactive(bufio.NewScanner(stdin))
	}
	code := 0
	if email != "" && !s.do("/api/email", map[string]string{"email": email, "code": s.code}, "verification link mailed to "+email) {
		code = 1
	}
	if requestReclaim != "" && !s.do("/api/reclaim/request", map[string]string{"name": requestReclaim}, "reclamation token mailed to the owner of "+requestReclaim) {
		code = 1
	}
	if reclaim != "" {
		if !s.do("/api/reclaim", map[string]string{"name": reclaim, "token": token, "code": s.code}, "") || !s.awaitName(reclaim) {
			code = 1
		}
	}
	if name != "" {
		if !s.do("/api/name", map[string]string{"name": name, "code": s.code}, "") || !s.awaitName(name) {
			code = 1
		}
	}
	return code
}

type setupSession struct {
	base string
	out  io.Writer
	wait time.Duration
	// code is the setup code sent with the changes that need it.
	code string
}

// do posts one action and prints the outcome.
func (s *setupSession) do(path string, body map[string]string, success string) bool {
	a, err := post(s.base, path, body)
	if err != nil {
		fmt.Fprintln(s.out, "error:", err)
		return false
	}
	if !a.OK {
		fmt.Fprintln(s.out, "refused:", a.Error)
		return false
	}
	if success != "" {
		fmt.Fprintln(s.out, success)
	}
	return true
}

// awaitName waits until the agent serves name with a certificate.
func (s *setupSession) awaitName(name string) bool {
	fmt.Fprintf(s.out, "%s accepted: obtaining its certificate", name)
	deadline := time.Now().Add(s.wait)
	for time.Now().Before(deadline) {
		st, err := fetchStatus(config.Config{SetupListen: strings.TrimPrefix(s.base, "http://")})
		if err == nil && st.Name == name && st.Certificate.Ready {
			fmt.Fprintf(s.out, "\nready: %s\n", st.URL)
			return true
		}
		if err == nil && st.Certificate.PendingError != "" {
			fmt.Fprintf(s.out, "\n(still trying: %s)", st.Certificate.PendingError)
		}
		fmt.Fprint(s.out, ".")
		time.Sleep(2 * time.Second)
	}
	fmt.Fprintln(s.out, "\nthe certificate is not there yet: `gateway-agent status` shows why; the agent keeps trying")
	return false
}

func (s *setupSession) interactive(in *bufio.Scanner) int {
	ask := func(prompt string) (string, bool) {
		fmt.Fprint(s.out, prompt)
		if !in.Scan() {
			return "", false
		}
		return strings.TrimSpace(in.Text()), true
	}
	st, err := fetchStatus(config.Config{SetupListen: strings.TrimPrefix(s.base, "http://")})
	if err != nil {
		fmt.Fprintf(s.out, "the agent is not answering on %s (is it running?): %v\n", s.base, err)
		return 1
	}
	fmt.Fprint(s.out, st.Text())
	if s.code == "" {
		c, ok := ask("setup code (shown by `gateway-agent status` on the gateway): ")
		if !ok {
			return 0
		}
		s.code = c
	}
	for {
		choice, ok := ask("\n1) choose the gateway's name\n2) set the owner's email\n3) ask for a reclamation token\n4) reclaim a name with a token\nq) quit\n> ")
		if !ok {
			return 0
		}
		switch choice {
		case "1":
			// Try names until the cloud accepts one.
			for {
				name, ok := ask("name (empty to go back): ")
				if !ok || name == "" {
					break
				}
				if s.do("/api/name", map[string]string{"name": name, "code": s.code}, "") {
					s.awaitName(name)
					break
				}
			}
		case "2":
			if email, ok := ask("email: "); ok && email != "" {
				s.do("/api/email", map[string]string{"email": email, "code": s.code}, "verification link mailed to "+email)
			}
		case "3":
			if name, ok := ask("name to reclaim: "); ok && name != "" {
				s.do("/api/reclaim/request", map[string]string{"name": name}, "a reclamation token was mailed to the owner of "+name)
			}
		case "4":
			name, ok1 := ask("name to reclaim: ")
			tok, ok2 := ask("token from the mail: ")
			if ok1 && ok2 && s.do("/api/reclaim", map[string]string{"name": name, "token": tok, "code": s.code}, "") {
				s.awaitName(name)
			}
		case "q", "quit", "exit":
			return 0
		default:
			fmt.Fprintln(s.out, "choose 1, 2, 3, 4 or q")
		}
	}
}
