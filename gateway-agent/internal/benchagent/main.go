// Command benchagent is the agent process of bench/tunnel's benchmark: a
// tunnel client whose streams the gateway agent's own proxy package serves
// (proxy.Server.HandleStream, as the agent does), so that the benchmark
// measures the agent's real code. It lives under gateway-agent/internal
// because only code there may import the proxy package; it is no part of
// the agent.
//
// -mode passthrough relays each stream to -upstream (the gateway's TLS
// server); -mode terminate ends TLS with -cert and -key and proxies to
// http://-upstream. The token comes from TUNNELBENCH_TOKEN (the command
// line is visible to other users); -debug serves net/http/pprof on a
// loopback address, for profiles of the agent. It runs until interrupted.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // profiles of the agent process, on its loopback debug port
	"net/url"
	"os"
	"os/signal"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/proxy"
	"github.com/gatehouse-project/gatehouse/modules/sockio"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
)

var (
	mode     = flag.String("mode", "", "passthrough or terminate")
	tunURL   = flag.String("url", "", "the cloud's tunnel URL")
	name     = flag.String("name", "", "the gateway's name")
	upstream = flag.String("upstream", "", "host:port of the gateway's server (passthrough) or app (terminate)")
	cloud    = flag.String("cloud", "", "host:port to connect to for the tunnel URL")
	caFile   = flag.String("ca", "", "the cloud's root certificate")
	certFile = flag.String("cert", "", "the gateway's certificate (terminate)")
	keyFile  = flag.String("key", "", "its key")
	debug    = flag.String("debug", "", "loopback address for net/http/pprof; empty: none")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("benchagent: ")
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	roots := x509.NewCertPool()
	pemBytes, err := os.ReadFile(*caFile)
	if err != nil {
		return err
	}
	roots.AppendCertsFromPEM(pemBytes)
	if *debug != "" {
		go func() { _ = http.ListenAndServe(*debug, nil) }()
	}

	cfg := proxy.Config{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	switch *mode {
	case "passthrough":
		cfg.Passthrough, cfg.UpstreamAddr = true, *upstream
	case "terminate":
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			return err
		}
		cfg.Upstream = &url.URL{Scheme: "http", Host: *upstream}
		cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }
	default:
		return fmt.Errorf("unknown mode %q", *mode)
	}
	srv, err := proxy.New(cfg)
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()

	cl := &client.Client{
		URL:     *tunURL,
		Name:    *name,
		Token:   os.Getenv("TUNNELBENCH_TOKEN"),
		Handler: srv.HandleStream,
		HTTPClient: &http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				c, err := d.DialContext(ctx, network, *cloud)
				if err != nil {
					return nil, err
				}
				// As the agent's own transport does (see sockio).
				return sockio.Wrap(c), nil
			},
		}},
		// The benchmark's concurrent downloads open hundreds of streams
		// at once.
		Config: tunnel.Config{AcceptBacklog: 1024},
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	err = cl.Run(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
