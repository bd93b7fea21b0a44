package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
)

// gatehouseCmd runs `caddy gatehouse ARGS` against the cloud's admin API
// and returns stdout, stderr and whether it succeeded.
func (c *cloud) gatehouseCmd(args ...string) (string, string, bool) {
	c.t.Helper()
	return runGatehouse(c.t, append(args, "--address", fmt.Sprintf("127.0.0.1:%d", c.admin))...)
}

func runGatehouse(t *testing.T, args ...string) (string, string, bool) {
	t.Helper()
	cmd := exec.Command(caddyBinary(t), append([]string{"gatehouse"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err == nil
}

func mustGatehouse(t *testing.T, c *cloud, args ...string) string {
	t.Helper()
	out, errs, ok := c.gatehouseCmd(args...)
	if !ok {
		t.Fatalf("caddy gatehouse %v failed: %s%s", args, errs, out)
	}
	return out
}

func TestAdminCommands(t *testing.T) {
	for _, driver := range teststore.Drivers {
		t.Run(driver, func(t *testing.T) {
			storage := "sqlite"
			if driver == "postgres" {
				storage = postgresStorage(t)
			}
			c := startCloud(t, cloudConfig(cloudOptions{storage: storage}))
			tokens := map[string]string{}
			for _, name := range []string{"gw1", "gw2"} {
				code, m := c.api("/subscribe?name=" + name)
				if code != 200 {
					t.Fatalf("subscribe %s: %d %v", name, code, m)
				}
				tokens[name] = m["token"].(string)
				if code, m := c.api("/ping?token=" + tokens[name] + "&local_ip=192.168.1.20"); code != 200 {
					t.Fatalf("ping %s: %d %v", name, code, m)
				}
			}

			var list struct {
				Gateways []struct {
					Name       string   `json:"name"`
					Disabled   bool     `json:"disabled"`
					LocalAddrs []string `json:"local_addrs"`
				} `json:"gateways"`
			}
			out := mustGatehouse(t, c, "list", "--json")
			if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Gateways) != 2 || list.Gateways[0].Name != "gw1" {
				t.Fatalf("list --json = %s (%v)", out, err)
			}
			if out := mustGatehouse(t, c, "list", "--name", "w2"); !strings.Contains(out, "gw2") || strings.Contains(out, "gw1") ||
				!strings.Contains(out, "NAME") || !strings.Contains(out, "192.168.1.20") {
				t.Errorf("list --name w2 table:\n%s", out)
			}
			if out := mustGatehouse(t, c, "list", "--addr", "192.168.1.20", "--limit", "1", "--all"); strings.Count(out, "gw") != 2 {
				t.Errorf("list --addr --all over pages of 1:\n%s", out)
			}
			for _, bad := range [][]string{{"list", "--mode", "bogus"}, {"list", "--addr", "not-an-ip"}, {"list", "--limit", "5000"},
				{"list", "--expired", "maybe"}} {
				if _, errs, ok := c.gatehouseCmd(bad...); ok || !strings.Contains(errs, "BadRequest") {
					t.Errorf("%v: ok=%v stderr=%s", bad, ok, errs)
				}
			}
			if _, errs, ok := c.gatehouseCmd("show", "nosuch"); ok || !strings.Contains(errs, "NoSuchName") {
				t.Errorf("show nosuch: ok=%v stderr=%s", ok, errs)
			}
			if out := mustGatehouse(t, c, "show", "gw1"); !strings.Contains(out, "gw1") || !strings.Contains(out, "tunnel") {
				t.Errorf("show gw1:\n%s", out)
			}

			// Disable: NXDOMAIN, token refused with the reason, name kept.
			if got := c.dig("gw1.box.test", "A"); len(got) == 0 {
				t.Fatal("gw1 has no address before disable")
			}
			mustGatehouse(t, c, "disable", "gw1")
			if s := testtools.DigStatus(t, c.dns, "gw1.box.test", "A"); s != "NXDOMAIN" {
				t.Errorf("disabled gw1 answers %s", s)
			}
			if code, m := c.api("/ping?token=" + tokens["gw1"]); code != 403 || m["error"] != "GatewayDisabled" {
				t.Errorf("ping of a disabled gateway: %d %v", code, m)
			}
			if code, m := c.api("/subscribe?name=gw1"); code != 400 {
				t.Errorf("subscribe to a disabled name: %d %v", code, m)
			}
			if out := mustGatehouse(t, c, "list", "--disabled", "true", "--json"); !strings.Contains(out, `"gw1"`) || strings.Contains(out, `"gw2"`) {
				t.Errorf("list --disabled true: %s", out)
			}
			mustGatehouse(t, c, "enable", "gw1")
			if got := c.dig("gw1.box.test", "A"); len(got) == 0 {
				t.Error("enabled gw1 has no address")
			}
			if code, m := c.api("/ping?token=" + tokens["gw1"]); code != 200 {
				t.Errorf("ping after enable: %d %v", code, m)
			}

			// Rotate: the old token stops, the new one works.
			out = mustGatehouse(t, c, "rotate-token", "gw2")
			newToken := strings.TrimSpace(out)
			if code, _ := c.api("/ping?token=" + tokens["gw2"]); code == 200 {
				t.Error("the old token still pings after rotate-token")
			}
			if code, m := c.api("/ping?token=" + newToken); code != 200 {
				t.Errorf("the new token %q: %d %v", newToken, code, m)
			}

			// Reserve and release.
			mustGatehouse(t, c, "reserve", "brand")
			if code, m := c.api("/subscribe?name=brand"); code != 400 || m["error"] != "UnavailableName" {
				t.Errorf("subscribe to a reserved name: %d %v", code, m)
			}
			if out := mustGatehouse(t, c, "reserved"); strings.TrimSpace(out) != "brand" {
				t.Errorf("reserved: %q", out)
			}
			if _, errs, ok := c.gatehouseCmd("release", "nosuch"); ok || !strings.Contains(errs, "NoSuchName") {
				t.Errorf("release nosuch: ok=%v %s", ok, errs)
			}
			mustGatehouse(t, c, "release", "brand")
			if code, m := c.api("/subscribe?name=brand"); code != 200 {
				t.Errorf("subscribe after release: %d %v", code, m)
			}

			var st struct {
				Registered int            `json:"registered"`
				ByMode     map[string]int `json:"by_mode"`
			}
			out = mustGatehouse(t, c, "stats", "--json")
			if err := json.Unmarshal([]byte(out), &st); err != nil || st.Registered != 3 || st.ByMode["tunnel"] != 3 {
				t.Errorf("stats: %s (%v)", out, err)
			}

			// Export through the admin API, import offline into SQLite,
			// migrate that to a fresh store of the driver.
			dir := t.TempDir()
			backupFile := filepath.Join(dir, "registry.jsonl")
			mustGatehouse(t, c, "export", "-o", backupFile)
			data, err := os.ReadFile(backupFile)
			if err != nil || !strings.Contains(string(data), `"type":"trailer"`) {
				t.Fatalf("export file: %v %.200s", err, data)
			}
			sqlitePath := filepath.Join(dir, "copy.db")
			if _, errs, ok := runGatehouse(t, "import", backupFile, "--store", "sqlite:"+sqlitePath); !ok {
				t.Fatalf("import --store: %s", errs)
			}
			if _, errs, ok := runGatehouse(t, "import", backupFile, "--store", "sqlite:"+sqlitePath); ok || !strings.Contains(errs, "not empty") {
				t.Errorf("second import without --force: ok=%v %s", ok, errs)
			}
			cut := filepath.Join(dir, "cut.jsonl")
			if err := os.WriteFile(cut, data[:len(data)/2], 0o600); err != nil {
				t.Fatal(err)
			}
			if _, errs, ok := runGatehouse(t, "import", cut, "--store", "sqlite:"+filepath.Join(dir, "cut.db")); ok ||
				!(strings.Contains(errs, "interrupted") || strings.Contains(errs, "corrupt")) {
				t.Errorf("import of a cut file: ok=%v %s", ok, errs)
			}
			if _, errs, ok := runGatehouse(t, "import", backupFile, "--force", "--store", "sqlite:"+filepath.Join(dir, "cut.db")); !ok {
				t.Errorf("import --force after the cut: %s", errs)
			}
			target := "sqlite:" + filepath.Join(dir, "target.db")
			if driver == "postgres" {
				target = "postgres:" + postgresSchemaDSN(t)
			}
			out, errs, ok := runGatehouse(t, "migrate", "--from", "sqlite:"+sqlitePath, "--to", target)
			if !ok || !strings.Contains(out, "verified") {
				t.Fatalf("migrate: %s %s", out, errs)
			}
			if _, errs, ok := runGatehouse(t, "migrate", "--from", "sqlite:"+sqlitePath, "--to", target); ok || !strings.Contains(errs, "not empty") {
				t.Errorf("migrate into a non-empty target: ok=%v %s", ok, errs)
			}
			if out, errs, ok := runGatehouse(t, "migrate", "--from", "sqlite:"+sqlitePath, "--to", target, "--force", "--json"); !ok ||
				!strings.Contains(out, `"Inserted"`) {
				t.Errorf("migrate --force (resume, nothing left): %s %s", out, errs)
			}
			if _, errs, ok := runGatehouse(t, "migrate", "--from", "mysql:x", "--to", target); ok || !strings.Contains(errs, "sqlite:PATH or postgres:DSN") {
				t.Errorf("migrate from a bad spec: %s", errs)
			}

			mustGatehouse(t, c, "delete", "gw2")
			if s := testtools.DigStatus(t, c.dns, "gw2.box.test", "A"); s != "NXDOMAIN" {
				t.Errorf("deleted gw2 answers %s", s)
			}
			if _, errs, ok := c.gatehouseCmd("delete", "gw2"); ok || !strings.Contains(errs, "NoSuchName") {
				t.Errorf("delete twice: ok=%v %s", ok, errs)
			}
			if !strings.Contains(c.logs(), `"gateway disabled"`) || !strings.Contains(c.logs(), `"gateway token rotated"`) {
				t.Errorf("the changes were not logged as events")
			}
		})
	}
}
