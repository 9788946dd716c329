// Package guestinit is the shared code of the tiny Go /init programs that
// the QEMU guest tests boot (package guestvm builds and boots them): it
// mounts the kernel's pseudo filesystems, loads the modules and config
// Build packed, waits for partitions, and prints the one
// GUEST-RESULT line before powering off.
package guestinit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/kmodule"
	"golang.org/x/sys/unix"
)

// Paths inside the initramfs that guestvm.Build writes and Run reads.
const (
	ConfigPath  = "/config.json"       // the test's config, as JSON
	ModulesPath = "/lib/modules/order" // module paths to load, one a line, in order
)

// Pass is the console line of a guest whose checks all held.
const Pass = "GUEST-RESULT: PASS"

// Run runs the guest's checks and reports them: it mounts /proc, /sys and
// /dev, loads the modules in ModulesPath, decodes
// ConfigPath into config, calls check, prints "GUEST-RESULT: PASS"
// or "GUEST-RESULT: FAIL: <error>" and powers off.
func Run(config any, check func() error) {
	err := setup(config)
	if err == nil {
		err = check()
	}
	if err != nil {
		fmt.Printf("GUEST-RESULT: FAIL: %v\n", err)
	} else {
		fmt.Println(Pass)
	}
	PowerOff()
}

// PowerOff syncs and powers the guest off.
func PowerOff() {
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

func setup(config any) error {
	if err := MountPseudo(); err != nil {
		return err
	}
	order, err := os.ReadFile(ModulesPath)
	if err != nil {
		return err
	}
	if err := LoadModules(strings.Fields(string(order))); err != nil {
		return err
	}
	b, err := os.ReadFile(ConfigPath)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, config); err != nil {
		return fmt.Errorf("%s: %w", ConfigPath, err)
	}
	return nil
}

// MountPseudo mounts proc, sysfs and devtmpfs on /proc, /sys and /dev
// (one already mounted is fine).
func MountPseudo() error {
	for _, m := range []struct{ src, dst, typ string }{{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"}} {
		os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.typ, 0, ""); err != nil && err != unix.EBUSY {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	return nil
}

// LoadModules inserts the kernel modules at paths, in order; one already
// loaded is fine.
func LoadModules(paths []string) error {
	for _, m := range paths {
		if err := LoadModule(m); err != nil {
			return err
		}
	}
	return nil
}

// LoadModule inserts the kernel module at path; one already loaded is fine.
func LoadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := kmodule.FileInit(f, "", 0); err != nil && err != unix.EEXIST {
		return fmt.Errorf("loading %s: %w", path, err)
	}
	return nil
}

// Wait calls find every 100 ms until it succeeds or 10 s have passed (the
// kernel adds virtio disks asynchronously) and returns its last result.
func Wait(find func() (string, error)) (string, error) {
	var dev string
	var err error
	for i := 0; i < 100; i++ {
		if dev, err = find(); err == nil {
			return dev, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", err
}

// Digest returns the hex SHA-256 of the file or device at p.
func Digest(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
