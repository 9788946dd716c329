// Package payload is initd's single measuring pass: it sets up every payload
// in policy order (dm-verity + read-only mount), extends RTMR3 with one
// canonical event per payload (or a payload-failed event), then the runtime
// config event, and keeps the runtime event log on disk after every event.
//
// An encrypted payload gets its verity device (over the ciphertext) and its
// payload event in that pass, so the honest boot's RTMR3 is the predicted
// one before any key is asked for; it is mounted later, by Open, once the
// network is up and its key released. One that stays locked gets a
// payload-locked event after the config event, in policy order.
package payload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/guest/rtmr"
	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/tdx/register"
)

// Files written into the run directory (/run/tdforge).
const (
	LogCEL  = "runtime-log.cel"
	LogJSON = "runtime-log.json"
	Marker  = "measured" // created before the first extend; blocks a second pass
)

// Verity sets up dm-verity devices (internal/guest/dmverity in the image).
type Verity interface {
	FindPartition(diskGUID string, index int) (devPath string, err error)
	Setup(name, device string, p policy.Payload) (mapperDev string, err error)
	Remove(name string) error
}

// Mounter mounts a verified device read-only (erofs, MS_RDONLY|MS_NODEV|MS_NOSUID).
type Mounter func(device, mountPoint, fstype string) error

// Unlocker opens encrypted payloads (initd/unlock in the image).
type Unlocker interface {
	// Unlock obtains pl's key (runtimeLog: the RTMR3 log so far, in CEL)
	// and maps the plaintext over verityDev, the verified ciphertext. It
	// returns the device to mount, or why pl stays locked (the error text
	// is the measured reason: short, no key material).
	Unlock(ctx context.Context, pl policy.Payload, verityDev string, runtimeLog []byte) (plainDev string, err error)
	// Lock removes the plaintext mapping of pl, if any.
	Lock(pl policy.Payload) error
}

// Pass holds what one measuring pass needs.
type Pass struct {
	Policy  *policy.Policy
	Backend rtmr.Backend
	Verity  Verity
	Mount   Mounter
	// RunDir receives the logs and the marker (normally /run/tdforge).
	RunDir string
	// FileGID is the group that may read the logs (the agent's); -1 leaves it.
	FileGID int
	// Console receives one line per event and every failure.
	Console io.Writer
}

// Result says which payloads are mounted.
type Result struct {
	Mounted map[string]bool
	Failed  map[string]error
	// Pending maps each encrypted payload awaiting Open to its verity
	// device; Locked maps each one Open could not open to the reason.
	Pending map[string]string
	Locked  map[string]string
	Log     *event.Log
	RTMR3   [48]byte // register value read back after the pass
}

// ErrAlreadyMeasured is returned when the marker shows a pass already ran.
var ErrAlreadyMeasured = errors.New("measurements were already taken this boot")

// Run performs the pass. A payload that fails is recorded (and attested) and
// the pass continues; an error is returned only when RTMR3 could not be
// extended as required, in which case no service may start.
func (p *Pass) Run() (*Result, error) {
	if p.Policy == nil || p.Backend == nil || p.Console == nil {
		return nil, errors.New("measure: policy, backend and console are required")
	}
	if err := os.MkdirAll(p.RunDir, 0o750); err != nil {
		return nil, fmt.Errorf("measure: %w", err)
	}
	mk, err := os.OpenFile(filepath.Join(p.RunDir, Marker), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("measure: %w (marker %s exists); refusing to extend RTMR3 again", ErrAlreadyMeasured, filepath.Join(p.RunDir, Marker))
		}
		return nil, fmt.Errorf("measure: marker: %w", err)
	}
	mk.Close()

	res := &Result{Mounted: map[string]bool{}, Failed: map[string]error{}, Pending: map[string]string{}, Locked: map[string]string{}, Log: event.NewLog()}
	if err := p.writeLog(res.Log); err != nil {
		return nil, err
	}
	for _, pl := range p.Policy.Payloads {
		ev := pl.Event()
		if dev, err := p.setup(pl); err != nil {
			res.Failed[pl.Name] = err
			fmt.Fprintf(p.Console, "initd: payload %s FAILED: %v\n", pl.Name, err)
			ev.Kind = event.KindPayloadFailed
		} else if pl.Encryption != nil {
			res.Pending[pl.Name] = dev
			fmt.Fprintf(p.Console, "initd: payload %s: ciphertext verified by dm-verity (root %s); its key comes from the broker once the network is up\n", pl.Name, pl.RootHash)
		} else {
			res.Mounted[pl.Name] = true
			fmt.Fprintf(p.Console, "initd: payload %s mounted read-only at %s (verity root %s)\n", pl.Name, pl.MountPoint, pl.RootHash)
		}
		if err := p.extend(res.Log, ev); err != nil {
			return res, err
		}
	}
	cfg, err := p.Policy.ConfigEvent()
	if err != nil {
		return res, fmt.Errorf("measure: config event: %w", err)
	}
	if err := p.extend(res.Log, cfg); err != nil {
		return res, err
	}
	return res, p.readBack(res)
}

// setup maps pl's verity device and, unless pl is encrypted, mounts it.
// It returns the verity device.
func (p *Pass) setup(pl policy.Payload) (string, error) {
	if p.Verity == nil || p.Mount == nil {
		return "", errors.New("dm-verity support is not available in this initd")
	}
	dev, err := p.Verity.FindPartition(p.Policy.Disk.GUID, pl.Partition)
	if err != nil {
		return "", fmt.Errorf("find partition %d on disk %s: %w", pl.Partition, p.Policy.Disk.GUID, err)
	}
	mapper, err := p.Verity.Setup(pl.Name, dev, pl)
	if err != nil {
		return "", fmt.Errorf("dm-verity on %s: %w", dev, err)
	}
	if pl.Encryption != nil {
		return mapper, nil
	}
	if err := p.mount(mapper, pl); err != nil {
		p.Verity.Remove(pl.Name)
		return "", err
	}
	return mapper, nil
}

func (p *Pass) mount(dev string, pl policy.Payload) error {
	if err := os.MkdirAll(pl.MountPoint, 0o755); err != nil {
		return fmt.Errorf("mount point: %w", err)
	}
	if err := p.Mount(dev, pl.MountPoint, pl.FSType); err != nil {
		return fmt.Errorf("mount %s on %s: %w", dev, pl.MountPoint, err)
	}
	return nil
}

// Open unlocks and mounts the encrypted payloads Run left pending, in
// policy order, after the network is up. Each one the Unlocker cannot
// open (or whose plaintext does not mount) stays locked: its mappings are
// removed, and RTMR3 and the log get a payload-locked event naming the
// reason. There is no other way to mount it: never a plaintext fallback.
// An error is returned only when RTMR3 could not be extended.
func (p *Pass) Open(ctx context.Context, res *Result, u Unlocker) error {
	for _, pl := range p.Policy.Payloads {
		vdev, ok := res.Pending[pl.Name]
		if !ok {
			continue
		}
		delete(res.Pending, pl.Name)
		reason := ""
		if u == nil {
			reason = "no key broker client in this initd"
		} else if cel, err := res.Log.MarshalBinary(); err != nil {
			reason = "runtime log: " + err.Error()
		} else if dev, err := u.Unlock(ctx, pl, vdev, cel); err != nil {
			reason = err.Error()
		} else if err := p.mount(dev, pl); err != nil {
			u.Lock(pl)
			reason = "the released key does not open it: " + err.Error()
		} else {
			res.Mounted[pl.Name] = true
			fmt.Fprintf(p.Console, "initd: payload %s unlocked and mounted read-only at %s (verity root %s over the ciphertext)\n", pl.Name, pl.MountPoint, pl.RootHash)
			continue
		}
		p.Verity.Remove(pl.Name)
		ev := event.Locked(pl.Name, reason)
		res.Locked[pl.Name] = string(ev.Digest)
		fmt.Fprintf(p.Console, "initd: payload %s LOCKED: %s\n", pl.Name, reason)
		if err := p.extend(res.Log, ev); err != nil {
			return err
		}
	}
	return p.readBack(res)
}

// Measure extends RTMR3 and the runtime log with ev after the pass (initd
// measures a sealed volume that stays closed this way) and reads RTMR3
// back into res.
func (p *Pass) Measure(res *Result, ev event.Event) error {
	if err := p.extend(res.Log, ev); err != nil {
		return err
	}
	return p.readBack(res)
}

// readBack reads RTMR3 into res after the pass's extensions.
func (p *Pass) readBack(res *Result) error {
	v, err := p.Backend.Read(register.RTMR3)
	if err != nil {
		return fmt.Errorf("measure: read back RTMR3: %w", err)
	}
	res.RTMR3 = v
	return nil
}

func (p *Pass) extend(l *event.Log, ev event.Event) error {
	err := l.Append(ev, func(m [48]byte) error { return p.Backend.Extend(register.RTMR3, m) })
	if err != nil {
		fmt.Fprintf(p.Console, "initd: RTMR3 extend with %s FAILED via %s: %v\n", ev.Label(), p.Backend.Name(), err)
		return fmt.Errorf("measure: extend RTMR3 with %s: %w", ev.Label(), err)
	}
	fmt.Fprintf(p.Console, "initd: rtmr3 += %s\n", ev)
	return p.writeLog(l)
}

// writeLog publishes the CEL and JSON renderings atomically.
func (p *Pass) writeLog(l *event.Log) error {
	cel, err := l.MarshalBinary()
	if err != nil {
		return fmt.Errorf("measure: encode runtime log: %w", err)
	}
	js, err := l.MarshalJSON()
	if err != nil {
		return fmt.Errorf("measure: render runtime log: %w", err)
	}
	if string(js) == "null" {
		js = []byte("[]")
	}
	for name, b := range map[string][]byte{LogCEL: cel, LogJSON: append(js, '\n')} {
		path := filepath.Join(p.RunDir, name)
		err := fsutil.WriteFrom(path, 0o640, func(w io.Writer) error {
			if p.FileGID >= 0 {
				if f, ok := w.(*fsutil.File); ok {
					if err := f.Chown(0, p.FileGID); err != nil {
						return err
					}
				}
			}
			_, err := w.Write(b)
			return err
		})
		if err != nil {
			return fmt.Errorf("measure: write %s: %w", path, err)
		}
	}
	return nil
}
