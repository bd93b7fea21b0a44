package forward_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gatehouse-project/gatehouse/modules/forward"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRules(t *testing.T) {
	rs := forward.Rules{{From: "gw2", To: "gw1", Ports: []uint16{22}}, {From: "*", To: "public"}}
	for _, c := range []struct {
		from, to string
		port     uint16
		want     bool
	}{
		{"gw2", "gw1", 22, true}, {"GW2", "gw1", 22, true}, {"gw2", "gw1", 80, false},
		{"gw1", "gw2", 22, false}, {"gw3", "public", 8080, true}, {"gw3", "gw1", 22, false},
	} {
		if got := rs.Allows(c.from, c.to, c.port); got != c.want {
			t.Errorf("%s -> %s:%d: got %v", c.from, c.to, c.port, got)
		}
	}
	if (forward.Rules{{From: "a"}}).Validate() == nil || (forward.Rules{{From: "a", To: "b", Ports: []uint16{0}}}).Validate() == nil {
		t.Error("invalid rules accepted")
	}
}

// world is a cloud hub with the forwarding relay and two connected agents:
// gw1 has an echo service on its LAN behind an allow-list, gw2 initiates.
type world struct {
	gw1, gw2 *client.Client
	echo     string
	relay    *forward.Relay
}

func newWorld(t *testing.T, rules forward.Rules, allow func(init tunnel.Initiator) error) *world {
	t.Helper()
	w := &world{}
	h := &hub.Hub{}
	w.relay = &forward.Relay{Tunnels: h, Rules: rules, Exists: func(_ context.Context, name string) (bool, error) {
		return name == "gw1" || name == "gw2" || name == "gw3", nil
	}}
	h.SetHandler(w.relay.Handle)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		h.ServeTunnel(rw, r, func(_ context.Context, name, key string) error {
			if key != name+"-key" {
				return &tunnel.RefusedError{Reason: "bad key"}
			}
			return nil
		}, tunnel.Config{})
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { _ = h.Close() })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	w.echo = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	t.Cleanup(func() { cancel(); <-done; <-done })
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	w.gw1 = &client.Client{URL: url, Name: "gw1", Token: "gw1-key", Handler: func(st *tunnel.Stream) {
		init := st.Initiator()
		if err := allow(init); err != nil {
			_ = st.Ack(false, err.Error())
			return
		}
		c, err := net.Dial("tcp", net.JoinHostPort(init.Ip, fmt.Sprint(init.Port)))
		if err != nil {
			_ = st.Ack(false, "dial failed")
			return
		}
		defer c.Close()
		_ = st.Ack(true, "")
		go func() { _, _ = io.Copy(c, st); c.(*net.TCPConn).CloseWrite() }()
		_, _ = io.Copy(st, c)
	}}
	w.gw2 = &client.Client{URL: url, Name: "gw2", Token: "gw2-key", Handler: func(st *tunnel.Stream) { _ = st.Ack(false, "no services") }}
	for _, c := range []*client.Client{w.gw1, w.gw2} {
		go func() { _ = c.Run(ctx); done <- struct{}{} }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for !w.gw1.State().Connected || !w.gw2.State().Connected {
		if time.Now().After(deadline) {
			t.Fatal("agents did not connect")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return w
}

func (w *world) target() (string, uint16) {
	host, port, _ := net.SplitHostPort(w.echo)
	var p uint16
	fmt.Sscan(port, &p)
	return host, p
}

func TestForwardEndToEnd(t *testing.T) {
	w := newWorld(t, forward.Rules{{From: "gw2", To: "gw1"}}, func(tunnel.Initiator) error { return nil })
	ip, port := w.target()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := w.gw2.Open(ctx, tunnel.Initiator{Gatename: "gw1", Ip: ip, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	payload := strings.Repeat("through two tunnels\n", 200_000) // 4 MiB, beyond any window
	go func() { _, _ = io.WriteString(st, payload); _ = st.CloseWrite() }()
	got, err := io.ReadAll(bufio.NewReader(st))
	if err != nil || string(got) != payload {
		t.Fatalf("echo through the relay: %d bytes, %v", len(got), err)
	}
	if w.relay.Opened.Load() != 1 || w.relay.BytesUp.Load() != uint64(len(payload)) || w.relay.BytesDown.Load() != uint64(len(payload)) {
		t.Fatalf("counters: opened %d up %d down %d", w.relay.Opened.Load(), w.relay.BytesUp.Load(), w.relay.BytesDown.Load())
	}
}

func TestForwardRefusals(t *testing.T) {
	w := newWorld(t, forward.Rules{{From: "gw2", To: "gw1", Ports: []uint16{22, 1}}, {From: "gw2", To: "gw3"}, {From: "gw2", To: "ghost"}},
		func(init tunnel.Initiator) error {
			if init.Port == 1 {
				return errors.New("destination not in allow-list")
			}
			return nil
		})
	ip, port := w.target()
	for _, c := range []struct {
		init tunnel.Initiator
		want string
	}{
		{tunnel.Initiator{Gatename: "gw1", Ip: ip, Port: port}, forward.ReasonDenied},
		{tunnel.Initiator{Gatename: "gw1", Ip: ip, Port: 1}, "refused by gw1: destination not in allow-list"},
		{tunnel.Initiator{Gatename: "gw3", Ip: ip, Port: port}, forward.ReasonOffline},
		{tunnel.Initiator{Gatename: "ghost", Ip: ip, Port: port}, forward.ReasonUnknownGateway},
		{tunnel.Initiator{Gatename: "", Ip: ip, Port: port}, forward.ReasonBadRequest},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := w.gw2.Open(ctx, c.init)
		cancel()
		var refused *tunnel.RefusedError
		if !errors.As(err, &refused) || refused.Reason != c.want {
			t.Errorf("%+v: got %v, want refusal %q", c.init, err, c.want)
		}
	}
	if w.relay.Refused.Load() != 5 || w.relay.Opened.Load() != 0 {
		t.Fatalf("counters: refused %d opened %d", w.relay.Refused.Load(), w.relay.Opened.Load())
	}
}

// Issue 14, finding 7, as the attack: the source agent claims a client
// address of its choosing on a forwarded stream. The target must see the
// address the cloud saw the source agent connect from (loopback here),
// never the claimed one, and the source gateway's own name.
func TestForwardStampsClientAddress(t *testing.T) {
	seen := make(chan tunnel.Initiator, 1)
	w := newWorld(t, forward.Rules{{From: "gw2", To: "gw1"}}, func(init tunnel.Initiator) error {
		seen <- init
		return nil
	})
	ip, port := w.target()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const spoofed = "203.0.113.66:6666"
	st, err := w.gw2.Open(ctx, tunnel.Initiator{Gatename: "gw1", Ip: ip, Port: port, ClientAddr: spoofed})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	init := <-seen
	ap, err := netip.ParseAddrPort(init.ClientAddr)
	if err != nil || init.ClientAddr == spoofed || !ap.Addr().IsLoopback() {
		t.Fatalf("the target saw client address %q: want the source agent's loopback address, not %q", init.ClientAddr, spoofed)
	}
	// A version 2 agent hears the target in Gatename and the source in
	// Source (tunnel.MetaFromInitiator reads both).
	if m := tunnel.MetaFromInitiator(init); init.Gatename != "gw1" || init.Source != "gw2" || m.Source != "gw2" ||
		init.Ip != ip || init.Port != port {
		t.Fatalf("the target saw %+v", init)
	}
}
