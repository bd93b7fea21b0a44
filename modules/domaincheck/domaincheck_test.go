package domaincheck

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools/cnamedns"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

func TestCheck(t *testing.T) {
	srv := cnamedns.Start(t)
	c, err := New([]string{srv.Addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	const fqdn = "myhome.box.example.org"
	ctx := t.Context()

	err = c.Check(ctx, "home.example.com", fqdn)
	if !errors.Is(err, registry.ErrNotDelegated) || !strings.Contains(err.Error(), "home.example.com has no CNAME") {
		t.Errorf("no records: %v", err)
	}
	srv.Set("home.example.com", fqdn)
	err = c.Check(ctx, "home.example.com", fqdn)
	if !errors.Is(err, registry.ErrNotDelegated) || !strings.Contains(err.Error(), "_acme-challenge.home.example.com has no CNAME") {
		t.Errorf("challenge CNAME missing: %v", err)
	}
	srv.Set("_acme-challenge.home.example.com", "_acme-challenge.other.box.example.org")
	err = c.Check(ctx, "home.example.com", fqdn)
	if !errors.Is(err, registry.ErrNotDelegated) || !strings.Contains(err.Error(), "not to _acme-challenge.myhome.box.example.org.") {
		t.Errorf("challenge CNAME to another gateway: %v", err)
	}
	// Targets compare case-insensitively, as DNS names do.
	srv.Set("_acme-challenge.home.example.com", "_ACME-challenge.MyHome.box.example.org")
	if err := c.Check(ctx, "home.example.com", fqdn); err != nil {
		t.Errorf("both CNAMEs in place: %v", err)
	}
}

// TestResolversInOrder: a resolver that refuses, or does not answer, is
// skipped; when none answers the error is not ErrNotDelegated, so that a
// recheck keeps the claim.
func TestResolversInOrder(t *testing.T) {
	refusing, good := cnamedns.Start(t), cnamedns.Start(t)
	refusing.Refuse(true)
	good.Set("home.example.com", "gw.box.example.org")
	good.Set("_acme-challenge.home.example.com", "_acme-challenge.gw.box.example.org")
	// A UDP port nobody reads: the query times out.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	c, err := New([]string{silent.LocalAddr().String(), refusing.Addr, good.Addr}, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Check(t.Context(), "home.example.com", "gw.box.example.org"); err != nil {
		t.Errorf("with one good resolver last: %v", err)
	}
	c, err = New([]string{silent.LocalAddr().String(), refusing.Addr}, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Check(t.Context(), "home.example.com", "gw.box.example.org")
	if err == nil || errors.Is(err, registry.ErrNotDelegated) || !strings.Contains(err.Error(), "no resolver answered") {
		t.Errorf("with no resolver answering: %v", err)
	}
}

func TestNewResolvers(t *testing.T) {
	c, err := New([]string{"127.0.0.1", "[::1]:5353", "::1", "[::2]"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Resolvers, ","); got != "127.0.0.1:53,[::1]:5353,[::1]:53,[::2]:53" || c.Timeout != DefaultTimeout {
		t.Errorf("resolvers %s, timeout %v", got, c.Timeout)
	}
	for _, bad := range []string{"resolver.example", "127.0.0.1:dns", "[::1", "1.2.3.4:99999"} {
		if _, err := New([]string{bad}, 0); err == nil {
			t.Errorf("New accepted resolver %q", bad)
		}
	}
}
