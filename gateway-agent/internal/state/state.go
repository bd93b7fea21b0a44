// Package state keeps what the gateway agent must remember across restarts:
// its registrations (names and their tokens) and the owner's email, in one
// JSON file in the state directory. The directory is kept at mode 0700 and
// the file at 0600, and every save replaces the file atomically (write a
// temporary file, sync, rename), so a crash or power loss leaves either the
// old or the new state, never a torn one.
//
// It knows nothing of the cloud's API or of certificates; it does not
// decide when to register.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// FileName is the state file inside the state directory.
const FileName = "state.json"

// Registration is one name the gateway holds, and its secret token.
type Registration struct {
	Name  string `json:"name"`
	Token string `json:"token"`
	// FQDN is NAME.ZONE as the cloud answered it.
	FQDN string `json:"fqdn"`
	Zone string `json:"zone"`
	// Mode is tunnel or dynamic, as subscribed.
	Mode registry.Mode `json:"mode,omitempty"`
	// Provisional marks the name derived from the MAC address.
	Provisional bool `json:"provisional,omitempty"`
	// RetireAfter, for a retired name, is when it is given up: until
	// then the gateway keeps its token, so the name stays reserved to
	// its owner, who can switch back to it. Zero means at once (states
	// written before the grace period existed).
	RetireAfter time.Time `json:"retire_after,omitzero"`
}

// Valid reports whether r names a registration.
func (r *Registration) Valid() bool { return r != nil && r.Name != "" && r.Token != "" }

// Clone returns a copy of r (nil for nil).
func (r *Registration) Clone() *Registration {
	if r == nil {
		return nil
	}
	c := *r
	return &c
}

// State is the content of the state file.
type State struct {
	// Cloud is the API the registrations belong to; a state made for
	// another cloud is not used.
	Cloud string `json:"cloud"`
	// Current is the name the agent serves.
	Current *Registration `json:"current,omitempty"`
	// Pending is a name the owner chose whose certificate is not there
	// yet; the agent switches to it once it is.
	Pending *Registration `json:"pending,omitempty"`
	// Retired are names replaced by Current (or by a later choice) that
	// are still held: until their RetireAfter, then until the cloud
	// confirms they are given up.
	Retired []Registration `json:"retired,omitempty"`
	// Email is the owner's address, as last sent to the cloud.
	Email string `json:"email,omitempty"`
}

// Clone returns a deep copy, so a caller can change it without a lock.
func (s State) Clone() State {
	if s.Current != nil {
		c := *s.Current
		s.Current = &c
	}
	if s.Pending != nil {
		p := *s.Pending
		s.Pending = &p
	}
	s.Retired = append([]Registration(nil), s.Retired...)
	return s
}

// Store reads and writes the state file of one directory. Its methods are
// safe for concurrent use within a process.
type Store struct {
	dir string
	mu  sync.Mutex
}

// Open returns the store of dir, creating the directory (0700) if needed
// and tightening its mode if it is looser.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	// MkdirAll leaves an existing directory's mode alone; the token must
	// not be readable by other users whatever the directory was.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("securing state directory: %w", err)
	}
	return &Store{dir: dir}, nil
}

// Dir is the state directory.
func (s *Store) Dir() string { return s.dir }

// Path is the state file.
func (s *Store) Path() string { return filepath.Join(s.dir, FileName) }

// Load reads the state; a missing file is the zero State.
func (s *Store) Load() (State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var st State
	b, err := os.ReadFile(s.Path())
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("reading state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, fmt.Errorf("state file %s is corrupt: %w", s.Path(), err)
	}
	return st, nil
}

// Save replaces the state file with st, atomically.
func (s *Store) Save(st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return WriteFileAtomic(s.Path(), append(b, '\n'), 0o600)
}

// WriteFileAtomic writes data to path through a temporary file in the same
// directory that is synced and renamed over path, so readers see the old or
// the new content, whole.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	// CreateTemp makes the file 0600 already; Chmod states the intent and
	// covers a perm other than 0600.
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	ok = true
	// The rename is durable only once the directory entry is; not every
	// system can sync a directory (Windows cannot), which is not an error.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
