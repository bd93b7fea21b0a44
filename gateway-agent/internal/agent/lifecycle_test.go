package agent

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/config"
)

// The hang of issue 11: with the default settings (setup page and mDNS
// on), a listener that fails to bind at start made Run wait forever for
// the mDNS goroutine, which ended only on a cancel that came after the
// wait. Run must return the bind error, and stop what it started.
func TestRunReturnsTheBindError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := config.Default()
	cfg.Cloud = "https://127.0.0.1:1" // never reached: Run stops before registering
	cfg.StateDir = t.TempDir()
	cfg.SetupListen = "127.0.0.1:0"
	cfg.HTTPSListen = busy.Addr().String()
	cfg.APIListen = "127.0.0.1:0"
	cfg.MDNSHost = "gatehouse-agent-test"
	cfg.LocalAddrs = []string{"127.0.0.1"}
	cfg.MAC = "02:00:00:00:00:0a"
	if !cfg.MDNS {
		t.Fatal("mDNS is off by default: the test no longer covers the default settings")
	}
	a, err := New(cfg, Options{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "https port") {
			t.Fatalf("Run: %v, want the https port's bind error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the HTTPS port failed to bind")
	}
}

// The run group: a failing goroutine cancels the others and its error is
// what Stop returns; Stop cancels before the stop functions, which run in
// reverse order, and waits for every goroutine.
func TestRunGroup(t *testing.T) {
	rg, ctx := newRunGroup(context.Background())
	var order []string
	rg.OnStop(func(context.Context) { order = append(order, "first registered") })
	rg.OnStop(func(context.Context) {
		if ctx.Err() == nil {
			t.Error("a stop function ran before the cancel")
		}
		order = append(order, "last registered")
	})
	ended := make(chan struct{})
	rg.Go(func() error { <-ctx.Done(); close(ended); return nil })
	boom := errors.New("boom")
	rg.Go(func() error { return boom })
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a failing goroutine did not cancel the group")
	}
	if err := rg.Stop(); !errors.Is(err, boom) {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-ended:
	default:
		t.Fatal("Stop returned before a goroutine ended")
	}
	if len(order) != 2 || order[0] != "last registered" {
		t.Fatalf("stop order %v", order)
	}
}
