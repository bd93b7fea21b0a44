// Package ingress is the cloud's tunnel frontend, without Caddy: it reads
// the ClientHello of each TLS connection and, when the server name is a
// gateway's (NAME.ZONE or a name below it) and that gateway has a live
// tunnel, relays the connection down the tunnel as it is, bytes untouched,
// so TLS stays end to end and the cloud never sees the gateway's
// plaintext.
//
// The rule it keeps: a connection whose server name belongs to a gateway
// with a live tunnel is relayed or closed, never handed to the local TLS
// server. That server holds the cloud's *.ZONE certificate, which is valid
// for NAME.ZONE, so handing such a connection over would let the cloud read
// the visitor's request (cookies, Authorization) whenever the gateway is
// busy. A refused or unanswered stream, a full per-gateway or per-client
// budget and an oversized ClientHello are therefore closed with a TLS
// alert. Only connections that name no live gateway (the cloud's own sites,
// an offline gateway's NAME.ZONE when the offline page is on, plain HTTP,
// a ClientHello the local TLS stack would reject anyway) go on, replayed,
// to the local server.
//
// It does not authenticate agents, terminate TLS, nor serve HTTP; the
// tunnels come from a Tunnels (the hub), the server-name mapping from the
// caller. modules/caddy/gatehouselistener adapts it to Caddy.
package ingress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// Tunnels finds a gateway's live tunnel. *hub.Hub satisfies it.
type Tunnels interface {
	Lookup(name string) (hub.Tunnel, bool)
}

// KiteServer serves one PageKite connection until it ends and closes it.
// *pagekite.Server satisfies it.
type KiteServer interface {
	ServeConn(ctx context.Context, conn net.Conn) error
}

// Defaults of Config.
const (
	// DefaultOpenTimeout bounds the wait for the agent to accept a stream.
	// The agent dials its upstream before it answers, so this covers a
	// slow local connect too.
	DefaultOpenTimeout = 10 * time.Second
	// DefaultMaxStreamsPerGateway bounds the ingress streams (opening or
	// relaying) of one gateway: half the tunnel's default stream limit
	// (4096), so that ingress alone never fills a session and the cloud
	// refuses before the session does.
	DefaultMaxStreamsPerGateway = 2048
	// DefaultMaxStreamsPerClient bounds the ingress streams one client
	// prefix holds to one gateway: half the gateway's budget, so one
	// client never takes all of it. A browser keeps about six
	// connections per host; operators whose gateways serve less should
	// lower it to what a gateway's upstream can hold.
	DefaultMaxStreamsPerClient = 1024
	// DefaultClientPrefixV4 and DefaultClientPrefixV6 group client
	// addresses: a /24 or a /64 is usually one customer, who can pick any
	// address inside it.
	DefaultClientPrefixV4 = 24
	DefaultClientPrefixV6 = 64
	// DefaultLogInterval spaces the summary lines of refused connections.
	DefaultLogInterval = 10 * time.Second
)

// Config configures a Router. Zone, Gateway and Tunnels are required.
type Config struct {
	// Zone is the gateways' zone: NAME.ZONE is a gateway's own name, the
	// names below it (local.NAME.ZONE, a.b.NAME.ZONE) belong to it too.
	Zone string
	// Gateway maps a TLS server name to the gateway it belongs to (NAME for
	// NAME.ZONE and names below it); ok is false for the cloud's own names
	// and names outside the zone.
	Gateway func(serverName string) (name string, ok bool)
	// Domain, when set, maps a server name outside the zone to the
	// gateway that claimed it as its custom domain (its owner pointed it
	// at NAME.ZONE by CNAME); such a name is routed like NAME.ZONE. Nil,
	// or ok false: the name goes to the local server as before.
	Domain func(serverName string) (name string, ok bool)
	// Tunnels holds the live tunnels.
	Tunnels Tunnels

	// PeekTimeout and MaxHelloBytes bound the ClientHello read (the
	// defaults of modules/clienthello when zero).
	PeekTimeout   time.Duration
	MaxHelloBytes int
	// OpenTimeout bounds the wait for the agent to accept a stream
	// (DefaultOpenTimeout when zero).
	OpenTimeout time.Duration

	// MaxStreamsPerGateway and MaxStreamsPerClient bound the concurrent
	// ingress streams of one gateway, and of one client prefix to one
	// gateway (defaults when zero). A connection over either is closed.
	MaxStreamsPerGateway int
	MaxStreamsPerClient  int
	// ClientPrefixV4 and ClientPrefixV6 are the prefix lengths that make
	// one client (defaults when zero).
	ClientPrefixV4 int
	ClientPrefixV6 int

	// NoOfflinePage, when set, closes connections for a gateway without a
	// live tunnel with a TLS alert instead of handing them to the local
	// server's offline page, so that the cloud never reads an offline
	// gateway's visitor's request.
	NoOfflinePage bool
	// NoSNIToServer hands connections without a server name to the local
	// server (for an operator who set a default certificate for them)
	// instead of closing them with an unrecognized_name alert.
	NoSNIToServer bool

	// Kites, when set, serves PageKite kites on the same port: a
	// connection whose first bytes are a kite's plain-text request
	// (pagekite.Sniff) goes to Kites.ServeConn, with those bytes
	// replayed, instead of to the local server. Nil (no token_seal_key)
	// leaves plain text to the local server as before.
	Kites KiteServer

	// LogInterval spaces the summary lines of refusals, one per reason
	// (DefaultLogInterval when zero).
	LogInterval time.Duration
	// Logger receives the refusal summaries and errors; nil discards.
	Logger *zap.Logger
	// Metrics receives the counters; nil discards.
	Metrics Metrics
}

// Errors of Config.Validate.
var (
	ErrNoZone        = errors.New("ingress: no zone")
	ErrNoGateway     = errors.New("ingress: no gateway mapping")
	ErrNoTunnels     = errors.New("ingress: no tunnels")
	ErrInvalidConfig = errors.New("ingress: invalid config")
)

// Validate checks c.
func (c Config) Validate() error {
	switch {
	case c.Zone == "":
		return ErrNoZone
	case c.Gateway == nil:
		return ErrNoGateway
	case c.Tunnels == nil:
		return ErrNoTunnels
	case c.PeekTimeout < 0, c.OpenTimeout < 0, c.LogInterval < 0:
		return fmt.Errorf("%w: negative duration", ErrInvalidConfig)
	case c.MaxHelloBytes < 0:
		return fmt.Errorf("%w: max_hello_bytes must not be negative", ErrInvalidConfig)
	case c.MaxHelloBytes > 0 && c.MaxHelloBytes < 512:
		// A ClientHello alone takes a few hundred bytes.
		return fmt.Errorf("%w: max_hello_bytes below 512 would refuse real ClientHellos", ErrInvalidConfig)
	case c.MaxStreamsPerGateway < 0, c.MaxStreamsPerClient < 0:
		return fmt.Errorf("%w: stream limits must not be negative", ErrInvalidConfig)
	case c.ClientPrefixV4 < 0 || c.ClientPrefixV4 > 32:
		return fmt.Errorf("%w: client prefix %d is not an IPv4 prefix length", ErrInvalidConfig, c.ClientPrefixV4)
	case c.ClientPrefixV6 < 0 || c.ClientPrefixV6 > 128:
		return fmt.Errorf("%w: client prefix %d is not an IPv6 prefix length", ErrInvalidConfig, c.ClientPrefixV6)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.OpenTimeout == 0 {
		c.OpenTimeout = DefaultOpenTimeout
	}
	if c.MaxStreamsPerGateway == 0 {
		c.MaxStreamsPerGateway = DefaultMaxStreamsPerGateway
	}
	if c.MaxStreamsPerClient == 0 {
		c.MaxStreamsPerClient = DefaultMaxStreamsPerClient
	}
	if c.ClientPrefixV4 == 0 {
		c.ClientPrefixV4 = DefaultClientPrefixV4
	}
	if c.ClientPrefixV6 == 0 {
		c.ClientPrefixV6 = DefaultClientPrefixV6
	}
	if c.LogInterval == 0 {
		c.LogInterval = DefaultLogInterval
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Metrics == nil {
		c.Metrics = nopMetrics{}
	}
	return c
}

// Router decides where each connection goes and relays the tunneled ones.
// Its stream budgets are shared by every listener that uses it. It is safe
// for concurrent use and owns no goroutine: each connection's goroutine
// belongs to the Listener that accepted it.
type Router struct {
	cfg    Config
	limits *limits
	logs   *refusalLog
}

// New returns a Router for cfg.
func New(cfg Config) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cfg.Zone = strings.ToLower(strings.TrimSuffix(cfg.Zone, "."))
	return &Router{
		cfg:    cfg,
		limits: newLimits(cfg.MaxStreamsPerGateway, cfg.MaxStreamsPerClient, cfg.ClientPrefixV4, cfg.ClientPrefixV6),
		logs:   newRefusalLog(cfg.Logger, cfg.LogInterval, time.Now),
	}, nil
}
