package testenv

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
)

// Browser starts headless Chromium (Debian's chromium) with a fresh profile
// and returns a chromedp context for it, bounded by timeout; it is closed
// when the test ends. extraFlags are added to the command line.
func Browser(t testing.TB, timeout time.Duration, extraFlags ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	bin := testtools.Binary(t, "chromium", "chromium")
	// Not t.TempDir: Chromium may still be writing its profile when the
	// test's own cleanup runs, and a leftover file must not fail the test.
	profile, err := os.MkdirTemp("", "gatehouse-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(profile),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1000, 1200),
	}
	opts = append(opts, extraFlags...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc() // waits for the browser to exit
		_ = os.RemoveAll(profile)
	})
	// Start the browser now, so a failure to launch is reported as such.
	if err := chromedp.Run(ctx); err != nil {
		if os.Getenv("GATEHOUSE_REQUIRE_TOOLS") != "1" {
			t.Skipf("chromium does not start here: %v", err)
		}
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// CheckScreenshot decodes a PNG screenshot and fails t unless it is a real
// page: the expected size, and not blank (enough pixels differ from the
// background).
func CheckScreenshot(t testing.TB, shot []byte) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	b := img.Bounds()
	if b.Dx() < 300 || b.Dy() < 300 {
		t.Fatalf("screenshot is %dx%d", b.Dx(), b.Dy())
	}
	bg := img.At(b.Min.X, b.Min.Y)
	br, bgc, bb, _ := bg.RGBA()
	differ, dark := 0, 0
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			if r != br || g != bgc || bl != bb {
				differ++
			}
			if r < 0x4000 && g < 0x4000 && bl < 0x4000 {
				dark++ // text
			}
		}
	}
	total := (b.Dx() / 2) * (b.Dy() / 2)
	if differ < total/100 || dark < 200 {
		t.Fatalf("screenshot looks blank: %d of %d sampled pixels differ from the background, %d dark", differ, total, dark)
	}
	return img
}

// KeepScreenshot writes shot to $GATEHOUSE_SCREENSHOTS/name when that
// variable names a directory, for a person to look at.
func KeepScreenshot(t testing.TB, name string, shot []byte) {
	dir := os.Getenv("GATEHOUSE_SCREENSHOTS")
	if dir == "" {
		return
	}
	if err := os.WriteFile(filepath.Join(dir, name), shot, 0o644); err != nil {
		t.Logf("keeping the screenshot: %v", err)
	}
}
