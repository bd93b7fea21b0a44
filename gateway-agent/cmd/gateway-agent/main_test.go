package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/setupcode"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/status"
)

func TestCommands(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, nil, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "gateway-agent ") {
		t.Fatalf("version: %d %q", code, out.String())
	}
	if code := run([]string{"frobnicate"}, nil, &out, &errb); code != 2 {
		t.Fatalf("unknown command: %d", code)
	}
	if code := run([]string{"run"}, nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "cloud is required") {
		t.Fatalf("run without cloud: %d %s", code, errb.String())
	}
}

// With no agent answering, status shows the last status file.
func TestStatusFallsBackToTheFile(t *testing.T) {
	dir := t.TempDir()
	st := status.Status{Updated: time.Now(), Name: "home", FQDN: "home.box.test", Mode: "tunnel"}
	if err := st.Save(filepath.Join(dir, status.FileName)); err != nil {
		t.Fatal(err)
	}
	if _, err := setupcode.LoadOrCreate(dir); err != nil {
		t.Fatal(err)
	}
	setupCode, _ := setupcode.Read(dir)
	var out, errb bytes.Buffer
	code := run([]string{"status", "-state-dir", dir, "-setup-listen", "127.0.0.1:1"}, nil, &out, &errb)
	if code != 0 || !strings.Contains(out.String(), "home.box.test") || !strings.Contains(errb.String(), "not answering") {
		t.Fatalf("status: %d\n%s\n%s", code, out.String(), errb.String())
	}
	// The setup code is shown on the device, from the state directory.
	if !strings.Contains(out.String(), "setup code:   "+setupcode.Format(setupCode)) {
		t.Fatalf("status does not show the setup code:\n%s", out.String())
	}
}

// The agent is built from the protocol and provider packages only, never
// from the cloud's Caddy adapters (nor Caddy itself).
func TestNoCaddyDependency(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.Contains(pkg, "gatehouse/modules/caddy/") || strings.HasPrefix(pkg, "github.com/caddyserver/caddy/") {
			t.Errorf("the agent depends on %s", pkg)
		}
	}
}

// The interactive setup tries names until the agent (here a stand-in of its
// local API) accepts one, then waits for its certificate.
func TestInteractiveSetupTriesNames(t *testing.T) {
	var mu sync.Mutex
	current := "gw-020000000001"
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		json.NewEncoder(w).Encode(status.Status{Name: current, FQDN: current + ".box.test", URL: "https://" + current + ".box.test/",
			Certificate: status.Certificate{Ready: true}})
	})
	mux.HandleFunc("POST /api/name", func(w http.ResponseWriter, r *http.Request) {
		var req map[string]string
		json.NewDecoder(r.Body).Decode(&req)
		if req["code"] != "abcde-fghjk" {
			w.WriteHeader(403)
			json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": "the setup code is wrong"})
			return
		}
		if req["name"] == "taken" {
			w.WriteHeader(400)
			json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": "this name is already taken", "code": "UnavailableName"})
			return
		}
		mu.Lock()
		current = req["name"]
		mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"ok": true})
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	var out, errb bytes.Buffer
	// No code in this (empty) state directory: the setup asks for it.
	in := strings.NewReader("abcde-fghjk\n1\ntaken\nmyhome\nq\n")
	code := run([]string{"setup", "-state-dir", t.TempDir(), "-setup-listen", strings.TrimPrefix(srv.URL, "http://")}, in, &out, &errb)
	if code != 0 {
		t.Fatalf("setup: %d %s", code, errb.String())
	}
	for _, want := range []string{"refused: this name is already taken", "myhome accepted", "ready: https://myhome.box.test/"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
