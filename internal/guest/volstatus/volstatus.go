// Package volstatus is the contract between initd, which opens the sealed
// volumes, and the services that use them: initd writes one small JSON
// file per volume, Dir/NAME.status, saying whether the volume is mounted
// and, when it is not, why. The directory is on /run (TD memory), which
// the host cannot read or write.
package volstatus

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tdforge/tdforge/internal/canonjson"
	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// Dir is where initd publishes the volume status files.
const Dir = "/run/tdforge/volumes"

// State is a volume's state.
type State string

// The states.
const (
	// Mounted: the volume is open and mounted at its policy mount point.
	Mounted State = "mounted"
	// Locked: initd could not obtain the key (the broker refused the
	// TD's evidence or could not be reached); the data stays sealed.
	Locked State = "locked"
	// Failed: the key was obtained but the volume did not open (header
	// mismatch, integrity errors, filesystem errors). It is never
	// reformatted automatically.
	Failed State = "failed"
)

// MaxReason bounds the reason text (and the file read).
const MaxReason = 1024

// Status is the content of a status file.
type Status struct {
	State  State  `json:"state"`
	Reason string `json:"reason,omitempty"`
}

// String renders the status as "mounted" or "locked (reason)".
func (s Status) String() string {
	if s.Reason == "" {
		return string(s.State)
	}
	return fmt.Sprintf("%s (%s)", s.State, s.Reason)
}

func (s Status) validate() error {
	switch s.State {
	case Mounted, Locked, Failed:
	default:
		return fmt.Errorf("state %q must be %s, %s or %s", s.State, Mounted, Locked, Failed)
	}
	if len(s.Reason) > MaxReason {
		return fmt.Errorf("reason is %d bytes; at most %d", len(s.Reason), MaxReason)
	}
	return nil
}

// Path is the status file of volume name in dir.
func Path(dir, name string) string { return filepath.Join(dir, name+".status") }

// Write atomically records volume name's status in dir (mode 0644: the
// services read it).
func Write(dir, name string, s Status) error {
	if !policy.ValidName(name) {
		return fmt.Errorf("volume status: name %q must match %s", name, policy.NamePattern)
	}
	if err := s.validate(); err != nil {
		return fmt.Errorf("volume %q status: %w", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := canonjson.Marshal(s)
	if err != nil {
		return err
	}
	return fsutil.WriteFile(Path(dir, name), b, 0o644)
}

// Read returns volume name's status from dir. A missing file reads as
// Locked with a reason saying initd has not opened the volume, since a
// service cannot tell "not yet" from "never".
func Read(dir, name string) Status {
	p := Path(dir, name)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Status{State: Locked, Reason: fmt.Sprintf("initd has not opened volume %q (no %s)", name, p)}
	}
	if err != nil {
		return Status{State: Failed, Reason: fmt.Sprintf("volume status %s: %v", p, err)}
	}
	defer f.Close()
	var s Status
	if err := canonjson.Decode(&limited{f, MaxReason + 256}, &s); err != nil {
		return Status{State: Failed, Reason: fmt.Sprintf("volume status %s is not valid: %v", p, err)}
	}
	if err := s.validate(); err != nil {
		return Status{State: Failed, Reason: fmt.Sprintf("volume status %s: %v", p, err)}
	}
	return s
}

// limited is io.LimitReader that fails instead of truncating.
type limited struct {
	f *os.File
	n int64
}

func (l *limited) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("file is too large")
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.f.Read(p)
	l.n -= int64(n)
	return n, err
}
