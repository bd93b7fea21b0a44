package tunnel

import (
	"bytes"
	"testing"
)

func pooledData(t *testing.T, g GUID, p []byte) outFrame {
	t.Helper()
	return dataFrame(g, p)
}

// TestCoalesce checks that merged frames decode to the concatenated
// payload, bin8 headers widen, other streams and oversized results do not
// merge, and unpooled frames are left alone.
func TestCoalesce(t *testing.T) {
	g1, g2 := NewGUID(), NewGUID()
	small := bytes.Repeat([]byte("a"), 100) // bin8
	mid := bytes.Repeat([]byte("b"), 16<<10)

	f := pooledData(t, g1, small)
	if !coalesce(&f, pooledData(t, g1, mid)) {
		t.Fatal("same stream did not merge")
	}
	if !coalesce(&f, pooledData(t, g1, small)) {
		t.Fatal("third frame did not merge")
	}
	msg, err := Decode(f.b)
	if err != nil {
		t.Fatalf("merged frame does not decode: %v", err)
	}
	d := msg.(Data)
	want := append(append(append([]byte{}, small...), mid...), small...)
	if d.GUID != g1 || !bytes.Equal(d.Data, want) {
		t.Fatalf("merged frame: guid %v, %d bytes, want %d", d.GUID, len(d.Data), len(want))
	}
	if coalesce(&f, pooledData(t, g2, small)) {
		t.Fatal("another stream's data merged")
	}
	big := pooledData(t, g1, bytes.Repeat([]byte("c"), MaxDataSize-len(want)+1))
	if coalesce(&f, big) {
		t.Fatal("merge past MaxFrameSize")
	}
	if len(f.b) > MaxFrameSize {
		t.Fatalf("frame of %d bytes", len(f.b))
	}
	un := outFrame{b: AppendData(nil, g1, small)}
	if coalesce(&un, pooledData(t, g1, small)) {
		t.Fatal("an unpooled frame was grown")
	}
	ctrl, _ := Encode(Window{GUID: g1, Credit: 1})
	c := outFrame{b: ctrl, pooled: f.pooled}
	if coalesce(&c, pooledData(t, g1, small)) {
		t.Fatal("a Window frame merged")
	}
}

// TestCoalesceFull fills a frame to exactly MaxFrameSize.
func TestCoalesceFull(t *testing.T) {
	g := NewGUID()
	f := pooledData(t, g, bytes.Repeat([]byte("x"), 1000))
	rest := MaxDataSize - 1000
	if !coalesce(&f, pooledData(t, g, bytes.Repeat([]byte("y"), rest))) {
		t.Fatal("a merge up to MaxDataSize was refused")
	}
	if len(f.b) != MaxFrameSize {
		t.Fatalf("frame of %d bytes, want %d", len(f.b), MaxFrameSize)
	}
	if _, err := Decode(f.b); err != nil {
		t.Fatal(err)
	}
}
