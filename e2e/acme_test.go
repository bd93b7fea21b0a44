package e2e

import (
	"testing"

	"github.com/libdns/libdns/libdnstest"

	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
)

// libdns's own conformance suite, with the real provider against a running
// cloud: a gateway manages the records of its own name taken as a zone.
func TestLibdnsSuite(t *testing.T) {
	for _, driver := range teststore.Drivers {
		t.Run(driver, func(t *testing.T) {
			storage := "sqlite"
			if driver == "postgres" {
				storage = postgresStorage(t)
			}
			c := startCloud(t, cloudConfig(cloudOptions{storage: storage}))
			code, sub := c.api("/subscribe?name=suite")
			if code != 200 {
				t.Fatalf("subscribe: %d %v", code, sub)
			}
			suite := libdnstest.NewTestSuite(c.provider(sub["token"].(string)), "suite.box.test.")
			// The API serves A, AAAA, CNAME and TXT only (docs/api.md).
			suite.SkipRRTypes = map[string]bool{"MX": true, "SRV": true, "CAA": true, "NS": true, "SVCB": true, "HTTPS": true}
			suite.RunTests(t)
		})
	}
}
