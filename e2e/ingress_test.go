package e2e

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
)

// Issue 14, items 1 and 9, as the attack against the built cloud. Before
// modules/ingress: the cloud served its 503 page for alpha, whose tunnel
// was live but whose upstream refused, so it terminated TLS for a live
// gateway with its *.ZONE certificate and read the visitor's request; and
// names it has no certificate for got Caddy's unexplained alert.
func TestIngressAttackLiveGatewayNotServedByCloud(t *testing.T) {
	c := startTunnelCloud(t, "")
	token := subscribe(t, c, "alpha")
	if code, _ := c.api("/ping?token=" + token); code != 200 {
		t.Fatalf("ping: %d", code)
	}
	// An upstream that refuses every connection: the agent refuses every
	// stream, as a gateway with a full accept backlog does.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	a := startAgent(t, c, "alpha", token, dead, fastBackoff)

	// A visitor trusting the cloud's CA (as browsers trust a public CA)
	// must not get an answer from the cloud for the live gateway.
	r, err := tryCurlTLS(t, c, "alpha.box.test", "/", c.rootCA())
	if err == nil {
		t.Fatalf("the cloud answered %d for a live gateway:\n%s", r.code, r.body)
	}
	if !strings.Contains(r.verbose, "alert internal error") {
		t.Fatalf("no clean TLS alert:\n%s", r.verbose)
	}
	if v := metricValue(adminMetrics(t, c), `gatehouse_ingress_refused_total{reason="open_failed"}`); v < 1 {
		t.Fatalf("refused open_failed: %v", v)
	}

	// Offline: the gateway's own name gets the page, names below it
	// (which no certificate of the cloud covers) a clean alert.
	a.stop()
	testtools.Eventually(t, 10*time.Second, "the offline page", func() bool {
		r, err := tryCurlTLS(t, c, "alpha.box.test", "/", c.rootCA())
		return err == nil && r.code == 503
	})
	for _, host := range []string{"local.alpha.box.test", "a.b.alpha.box.test"} {
		r, err := tryCurlTLS(t, c, host, "/", c.rootCA())
		if err == nil || !strings.Contains(r.verbose, "unrecognized name") {
			t.Fatalf("%s: %v, want an unrecognized_name alert:\n%s", host, err, r.verbose)
		}
	}

	// No SNI (an address in the URL): a clean alert too.
	curl := testtools.Binary(t, "curl", "curl")
	out, err := exec.Command(curl, "-sS", "-v", "-k", "--max-time", "20",
		fmt.Sprintf("https://127.0.0.1:%d/", c.https)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unrecognized name") {
		t.Fatalf("no SNI: %v, want an unrecognized_name alert:\n%s", err, out)
	}
}
