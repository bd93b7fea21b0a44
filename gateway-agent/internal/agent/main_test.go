package agent

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine the agent starts has an owner that stops it: Run leaves
// nothing behind, whether it ends by its context or by an error.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
