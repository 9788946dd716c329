// Command guest is the /init of the crypt package's QEMU test: after
// guestinit.Run loaded the modules and config, it finds the encrypted
// payload's partition, maps dm-verity over the ciphertext
// (dmverity.Setup), then the kernel's dm-crypt over the verity device with
// the table crypt.Table writes (read-only, through devmapper.Create), and
// checks the decrypted image byte for byte and the files of its EROFS
// mount. It prints one GUEST-RESULT line and powers off.
package main

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/tdforge/tdforge/internal/guest/devmapper"
	"github.com/tdforge/tdforge/internal/guest/dmverity"
	"github.com/tdforge/tdforge/internal/image/crypt"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/testutil/guestvm/guestinit"
)

// Config is written by the host test into the initramfs.
type Config struct {
	DiskGUID    string            `json:"disk_guid"`
	Payload     policy.Payload    `json:"payload"`
	Key         string            `json:"key"`          // hex; a test key
	ImageSHA256 string            `json:"image_sha256"` // of the plaintext EROFS image
	Expect      map[string]string `json:"expect"`       // path -> sha256
}

func main() {
	var c Config
	guestinit.Run(&c, func() error { return run(c) })
}

func run(c Config) error {
	p := c.Payload
	dev, err := guestinit.Wait(func() (string, error) { return dmverity.FindPartition(c.DiskGUID, p.Partition) })
	if err != nil {
		return err
	}
	verity, err := dmverity.Setup("verity-"+p.Name, dev, p)
	if err != nil {
		return err
	}
	majMin, err := devmapper.DevNum(verity)
	if err != nil {
		return err
	}
	key, _ := hex.DecodeString(c.Key)
	length, params, err := crypt.Table(*p.Encryption, key, majMin, p.DataSize)
	if err != nil {
		return err
	}
	node, err := devmapper.Create("crypt-"+p.Name, "", true, devmapper.Target{Length: length, Type: "crypt", Params: params})
	if err != nil {
		return err
	}
	got, err := guestinit.Digest(node)
	if err != nil {
		return fmt.Errorf("reading %s: %w", node, err)
	}
	if got != c.ImageSHA256 {
		return fmt.Errorf("dm-crypt plaintext sha256 %s, want the EROFS image's %s", got, c.ImageSHA256)
	}
	fmt.Println("GUEST: dm-crypt plaintext matches the EROFS image")
	mnt := "/mnt/" + p.Name
	os.MkdirAll(mnt, 0o755)
	if err := unix.Mount(node, mnt, "erofs", unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount %s: %w", node, err)
	}
	for path, want := range c.Expect {
		got, err := guestinit.Digest(filepath.Join(mnt, path))
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if got != want {
			return fmt.Errorf("%s: sha256 %s, want %s", path, got, want)
		}
		fmt.Printf("GUEST: %s ok\n", path)
	}
	return nil
}
