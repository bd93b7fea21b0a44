package state

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestSaveLoadModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := s.Load(); err != nil || st.Current != nil {
		t.Fatalf("empty state: %+v %v", st, err)
	}
	want := State{Cloud: "https://api.box.test", Current: &Registration{Name: "home", Token: "secret", FQDN: "home.box.test", Zone: "box.test"},
		Retired: []Registration{{Name: "gw-1", Token: "old"}}, Email: "me@example.com"}
	if err := s.Save(want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil || got.Current.Token != "secret" || got.Retired[0].Name != "gw-1" || got.Email != want.Email {
		t.Fatalf("loaded %+v %v", got, err)
	}
	if runtime.GOOS != "windows" {
		if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
			t.Errorf("directory mode %v", fi.Mode().Perm())
		}
		if fi, _ := os.Stat(s.Path()); fi.Mode().Perm() != 0o600 {
			t.Errorf("file mode %v", fi.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	// A clone shares nothing.
	c := got.Clone()
	c.Current.Token = "changed"
	if got.Current.Token != "secret" {
		t.Error("Clone shares Current")
	}
}

func TestCorruptFile(t *testing.T) {
	s, _ := Open(t.TempDir())
	os.WriteFile(s.Path(), []byte("{not json"), 0o600)
	if _, err := s.Load(); err == nil {
		t.Fatal("a corrupt state file loaded")
	}
}
