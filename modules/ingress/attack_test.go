package ingress

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// Attack tests of issue 14: each is the attack, failing on the code before
// modules/ingress and passing after.

// handshake dials the fixture from local (empty: any), runs a TLS client
// handshake for sni and returns its error. cfg tweaks the client config.
func (f *fixture) handshake(local, sni string, cfg func(*tls.Config)) error {
	f.t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", f.ln.Addr().String())
	if err != nil {
		f.t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := &tls.Config{ServerName: sni, InsecureSkipVerify: true}
	if cfg != nil {
		cfg(tc)
	}
	return tls.Client(c, tc).Handshake()
}

// Alerts as crypto/tls reports them.
const (
	internalError    = "remote error: tls: internal error"
	unrecognizedName = "remote error: tls: unrecognized name"
)

// wantAlert fails unless err is the client's report of the alert (a reset
// or EOF would mean the alert was lost).
func wantAlert(t *testing.T, err error, alert string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), alert) {
		t.Fatalf("handshake error %v, want %q", err, alert)
	}
}

// serverRoutes is how many connections went to the local server so far.
func (f *fixture) serverRoutes() float64 {
	return value(f.m.Connections.WithLabelValues(RouteServer))
}

// Item 1: a connection for a gateway with a live tunnel never reaches the
// local server, whose *.ZONE certificate would let the cloud read the
// visitor's request. Before: the refused stream, the unanswered stream and
// the oversized ClientHello were all handed to Caddy.
func TestLiveGatewayNeverReachesServer(t *testing.T) {
	f := newFixtureConfig(t, Config{OpenTimeout: 300 * time.Millisecond, MaxHelloBytes: 2048})
	f.agent("refuser", func(st *tunnel.Stream) { _ = st.Ack(false, "upstream down") })
	stall := make(chan struct{})
	f.agent("stalled", func(*tunnel.Stream) { <-stall }) // never answers
	// Registered after the agent's cleanup, so it runs before it: the
	// agent waits for its handlers.
	t.Cleanup(func() { close(stall) })
	f.agent("alive", func(st *tunnel.Stream) { _ = st.Ack(true, ""); _, _ = io.Copy(io.Discard, st) })
	// Enough protocols for a ClientHello over 2048 bytes (a hello with an ML-KEM key share alone takes about 1,500), with the name
	// of a live gateway somewhere inside.
	var protos []string
	for i := range 100 {
		protos = append(protos, fmt.Sprintf("protocol-%02d-%s", i, strings.Repeat("x", 20)))
	}

	for _, tc := range []struct {
		name, sni, reason string
		cfg               func(*tls.Config)
	}{
		{"refused stream", "refuser.zone.test", ReasonOpenFailed, nil},
		{"refused stream, name below", "www.refuser.zone.test", ReasonOpenFailed, nil},
		{"unanswered stream", "stalled.zone.test", ReasonOpenFailed, nil},
		{"oversized hello", "alive.zone.test", ReasonTooLarge, func(c *tls.Config) { c.NextProtos = protos }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server, refused := f.serverRoutes(), value(f.m.RefusedVec.WithLabelValues(tc.reason))
			wantAlert(t, f.handshake("", tc.sni, tc.cfg), internalError)
			if got := f.serverRoutes(); got != server {
				t.Fatalf("the connection reached the local server (%v, then %v)", server, got)
			}
			if got := value(f.m.RefusedVec.WithLabelValues(tc.reason)); got != refused+1 {
				t.Fatalf("refused{%s}: %v, then %v", tc.reason, refused, got)
			}
		})
	}
	testtools.Eventually(t, 10*time.Second, "the budgets to be given back", func() bool {
		return f.r.limits.held("refuser")+f.r.limits.held("stalled") == 0
	})
}

// Item 9: no SNI, and names below a gateway without a live tunnel (which
// no certificate of the cloud covers), get a clean unrecognized_name alert
// rather than whatever the local TLS server does with a name it has no
// certificate for; the gateway's own name gets the offline page, unless
// the operator turned it off.
func TestCleanAlerts(t *testing.T) {
	f := newFixture(t, 0)
	for _, sni := range []string{"", "local.offline.zone.test", "a.b.offline.zone.test"} {
		t.Run("sni "+sni, func(t *testing.T) {
			server := f.serverRoutes()
			wantAlert(t, f.handshake("", sni, nil), unrecognizedName)
			if got := f.serverRoutes(); got != server {
				t.Fatalf("the connection reached the local server")
			}
		})
	}
	t.Run("offline page", func(t *testing.T) {
		hello := captureHello(t, "offline.zone.test")
		c := f.dial()
		if _, err := c.Write(hello); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, len(hello))
		if _, err := io.ReadFull(f.accept(), b); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("offline page off", func(t *testing.T) {
		g := newFixtureConfig(t, Config{NoOfflinePage: true})
		wantAlert(t, g.handshake("", "offline.zone.test", nil), unrecognizedName)
		if got := g.serverRoutes(); got != 0 {
			t.Fatalf("%v connections reached the local server", got)
		}
	})
}

// Item 1: one client flooding a live gateway cannot take it offline for
// others. The gateway serves at most 6 streams at once (as a small
// upstream would) and refuses beyond. Before: the flood took all 6, the
// other client's stream was refused and it landed on the cloud's page.
// After: the flooder holds at most its share (4), the rest of its
// connections are closed, and the other client gets through.
func TestOneClientCannotStarveOthers(t *testing.T) {
	f := newFixtureConfig(t, Config{MaxStreamsPerClient: 4, MaxStreamsPerGateway: 16})
	cert, pool := selfSigned(t, "busy.zone.test")
	serve := tlsGateway(cert, "busy", nil)
	slots := make(chan struct{}, 6)
	f.agent("busy", func(st *tunnel.Stream) {
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
			serve(st)
		default:
			_ = st.Ack(false, "busy")
		}
	})
	hello := captureHello(t, "busy.zone.test")

	// The flood: 20 connections from 127.0.1.0/24 that send a ClientHello
	// and hold on.
	flooder := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, 1)}}
	var closed sync.WaitGroup
	for range 20 {
		c, err := flooder.Dial("tcp", f.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write(hello); err != nil {
			t.Fatal(err)
		}
		closed.Add(1)
		go func() {
			defer closed.Done()
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, _ = io.Copy(io.Discard, c)
		}()
	}
	testtools.Eventually(t, 10*time.Second, "the flood to be sorted", func() bool {
		return value(f.m.RefusedVec.WithLabelValues(ReasonClientLimit)) == 16
	})
	if held := f.r.limits.held("busy"); held != 4 {
		t.Fatalf("the flooder holds %d streams, want 4", held)
	}

	// The other client, from another /24, still gets its page.
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 2, 1)}}
	raw, err := d.Dial("tcp", f.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(raw, &tls.Config{ServerName: "busy.zone.test", RootCAs: pool})
	fmt.Fprint(tc, "GET /mine HTTP/1.1\r\nHost: busy.zone.test\r\n\r\n")
	resp, err := readResponse(tc)
	if err != nil || resp != "busy /mine" {
		t.Fatalf("the other client got %q, %v", resp, err)
	}
	if got := f.serverRoutes(); got != 0 {
		t.Fatalf("%v connections reached the local server", got)
	}
	closed.Wait()
}

func readResponse(c net.Conn) (string, error) {
	var sb strings.Builder
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		if line == "\r\n" {
			break
		}
	}
	_, err := io.Copy(&sb, br)
	return sb.String(), err
}

// Item 8: a flood of refusals is a few log lines, and every one is counted.
// Before: one info line per refused stream (49,000 lines in 45 s).
func TestRefusalLogsAreRateLimited(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	f := newFixtureConfig(t, Config{Logger: zap.New(core), LogInterval: time.Hour})
	f.agent("refuser", func(st *tunnel.Stream) { _ = st.Ack(false, "upstream down") })
	const n = 50
	for range n {
		wantAlert(t, f.handshake("", "refuser.zone.test", nil), internalError)
	}
	if got := value(f.m.RefusedVec.WithLabelValues(ReasonOpenFailed)); got != n {
		t.Fatalf("refused{open_failed}: %v, want %d", got, n)
	}
	lines := logs.FilterField(zap.String("reason", ReasonOpenFailed)).All()
	if len(lines) != 1 {
		t.Fatalf("%d log lines for %d refusals, want 1 per interval", len(lines), n)
	}
	if len(logs.All()) > 2 {
		t.Fatalf("%d log lines in all: %v", len(logs.All()), logs.All())
	}
}

// The summary line after an interval reports what was left unlogged.
func TestRefusalLogSummary(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	now := time.Unix(1000, 0)
	l := newRefusalLog(zap.New(core), 10*time.Second, func() time.Time { return now })
	for range 5 {
		l.refused(ReasonClientLimit)
	}
	l.refused(ReasonNoSNI)
	now = now.Add(11 * time.Second)
	l.refused(ReasonClientLimit)
	all := logs.All()
	if len(all) != 3 {
		t.Fatalf("%d lines: %v", len(all), all)
	}
	if got := all[2].ContextMap()["more_refused_unlogged"]; got != int64(4) {
		t.Fatalf("summary reports %v unlogged, want 4", got)
	}
	if _, ok := all[0].ContextMap()["more_refused_unlogged"]; ok {
		t.Fatal("the first line reports unlogged refusals")
	}
}
