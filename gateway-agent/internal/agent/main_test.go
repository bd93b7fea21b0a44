package agent

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine the agent starts has an owner that stops it: Run leaves
// nothing behind, whether it ends by its context or by an error. The one
// exception is CertMagic's own: while it obtains a certificate it keeps
// its storage lock fresh from a goroutine that has no stop handle and
// ends by itself within 5 s of the lock's release.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"))
}
