// Command guest is the /init of the dmverity package's QEMU test: after
// guestinit.Run loaded the modules and config, it finds each partition by
// GPT disk GUID, activates dm-verity with dmverity.Setup, mounts the EROFS
// image and checks file digests (or, for a corrupted payload, that reading
// fails). It prints one GUEST-RESULT line and powers off.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/tdforge/tdforge/internal/guest/dmverity"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/testutil/guestvm/guestinit"
)

// Config is written by the host test into the initramfs.
type Config struct {
	DiskGUID string                       `json:"disk_guid"`
	Payloads []policy.Payload             `json:"payloads"`
	Expect   map[string]map[string]string `json:"expect"`  // payload -> path -> sha256
	Corrupt  map[string]string            `json:"corrupt"` // payload -> path that must fail to read
}

func main() {
	var c Config
	guestinit.Run(&c, func() error { return run(c) })
}

func run(c Config) error {
	for _, p := range c.Payloads {
		dev, err := guestinit.Wait(func() (string, error) { return dmverity.FindPartition(c.DiskGUID, p.Partition) })
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
			got, err := guestinit.Digest(filepath.Join(mnt, path))
			if err != nil {
				return fmt.Errorf("%s:%s: %w", p.Name, path, err)
			}
			if got != want {
				return fmt.Errorf("%s:%s: sha256 %s, want %s", p.Name, path, got, want)
			}
			fmt.Printf("GUEST: %s:%s ok\n", p.Name, path)
		}
		if path, ok := c.Corrupt[p.Name]; ok {
			if _, err := guestinit.Digest(filepath.Join(mnt, path)); err == nil {
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
