// Command guest is the /init of the dmverity package's QEMU test: it loads
// the kernel modules named in /config.json, finds each payload partition by
// GPT disk GUID, activates dm-verity with dmverity.Setup, mounts the EROFS
// image and checks file digests (or, for a corrupted payload, that reading
// fails). It prints one GUEST-RESULT line and powers off.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdforge/tdforge/internal/guest/dmverity"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// Config is written by the host test into the initramfs.
type Config struct {
	Modules  []string                     `json:"modules"`
	DiskGUID string                       `json:"disk_guid"`
	Payloads []policy.Payload             `json:"payloads"`
	Expect   map[string]map[string]string `json:"expect"`  // payload -> path -> sha256
	Corrupt  map[string]string            `json:"corrupt"` // payload -> path that must fail to read
}

func main() {
	err := run()
	if err != nil {
		fmt.Printf("GUEST-RESULT: FAIL: %v\n", err)
	} else {
		fmt.Println("GUEST-RESULT: PASS")
	}
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

func run() error {
	for _, m := range []struct{ src, dst, typ string }{{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"}} {
		os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.typ, 0, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	b, err := os.ReadFile("/config.json")
	if err != nil {
		return err
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return err
	}
	for _, m := range c.Modules {
		f, err := os.Open(m)
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && err != unix.EEXIST {
			return fmt.Errorf("loading %s: %w", m, err)
		}
	}
	for _, p := range c.Payloads {
		var dev string
		var err error
		for i := 0; i < 100; i++ { // virtio disks appear asynchronously
			if dev, err = dmverity.FindPartition(c.DiskGUID, p.Partition); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			return err
		}
		node, err := dmverity.Setup("payload-"+p.Name, dev, p)
		if err != nil {
			return err
		}
		mnt := filepath.Join("/mnt", p.Name)
		os.MkdirAll(mnt, 0o755)
		if err := unix.Mount(node, mnt, "erofs", unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("mount %s (%s on %s): %w", p.Name, node, dev, err)
		}
		for path, want := range c.Expect[p.Name] {
			got, err := digest(filepath.Join(mnt, path))
			if err != nil {
				return fmt.Errorf("%s:%s: %w", p.Name, path, err)
			}
			if got != want {
				return fmt.Errorf("%s:%s: sha256 %s, want %s", p.Name, path, got, want)
			}
			fmt.Printf("GUEST: %s:%s ok\n", p.Name, path)
		}
		if path, ok := c.Corrupt[p.Name]; ok {
			if _, err := digest(filepath.Join(mnt, path)); err == nil {
				return fmt.Errorf("%s:%s: corrupted data was readable", p.Name, path)
			} else {
				fmt.Printf("GUEST: %s:%s corrupted read failed: %v\n", p.Name, path, err)
			}
		}
		if err := unix.Unmount(mnt, 0); err != nil {
			return err
		}
		if err := dmverity.Remove("payload-" + p.Name); err != nil {
			return err
		}
	}
	return nil
}

func digest(p string) (string, error) {
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
