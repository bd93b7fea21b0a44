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
