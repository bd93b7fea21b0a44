package agent

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/config"
)

func TestNewRefusesABadConfig(t *testing.T) {
	cfg := config.Default()
	cfg.StateDir = t.TempDir()
	if _, err := New(cfg, Options{}); !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("no cloud: %v", err)
	}
}

// The cloud transport trusts cloud_ca and connects resolved names to their
// override, keeping the name for TLS.
func TestCloudTransport(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "OK") }))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	u, _ := url.Parse(srv.URL)
	cfg := config.Default()
	cfg.Cloud = "https://api.box.test"
	cfg.CloudCA = ca
	cfg.Resolve = []string{"example.com=127.0.0.1"} // httptest's certificate names example.com
	set, err := cfg.Validate()
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cloudTransport(cfg, set.Resolve)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Get("https://example.com:" + u.Port() + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "OK" {
		t.Fatalf("got %q", b)
	}
}

// With the cloud unreachable the agent keeps trying, says so in plain
// words, serves its setup page meanwhile, and stops promptly.
func TestUnreachableCloudIsReported(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	cfg := config.Default()
	cfg.Cloud = "https://" + closed
	cfg.StateDir = t.TempDir()
	cfg.SetupListen = "127.0.0.1:0"
	cfg.HTTPSListen = ""
	cfg.MDNS = false
	cfg.MAC = "02:00:00:00:00:09"
	a, err := New(cfg, Options{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := a.Status()
		if len(st.Problems) > 0 && strings.Contains(st.Problems[0], "the cloud is unreachable") {
			if st.Name != "" || st.Tunnel.Note != "opens once the gateway is registered" {
				t.Fatalf("status: %+v", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no plain-words problem: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
}
