package logging

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestZapGoesToSlog(t *testing.T) {
	var b bytes.Buffer
	l := New(&b, slog.LevelInfo, "json")
	z := Zap(l).Named("obtain").With(zap.String("identifier", "home.box.test"))
	z.Debug("hidden")
	z.Info("obtaining certificate", zap.Int("attempt", 2))
	out := b.String()
	if strings.Count(out, "\n") != 1 || strings.Contains(out, "hidden") {
		t.Fatalf("one line expected:\n%s", out)
	}
	for _, want := range []string{`"msg":"obtaining certificate"`, `"logger":"obtain"`, `"identifier":"home.box.test"`, `"attempt":2`} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %s in %s", want, out)
		}
	}
}
