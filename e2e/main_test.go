package e2e

import (
	"testing"

	"github.com/gatehouse-project/gatehouse/internal/testtools/cloudtest"
)

// TestMain removes the Caddy and Pebble binaries the tests built.
func TestMain(m *testing.M) { cloudtest.Main(m) }
