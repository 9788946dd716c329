// Command guest is the /init of the crypt package's QEMU test: it loads the
// kernel modules named in /config.json, finds the encrypted payload's
// partition, maps dm-verity over the ciphertext (dmverity.Setup), then the
// kernel's dm-crypt over the verity device with the table crypt.Table
// writes, and checks the decrypted image byte for byte and the files of
// its EROFS mount. It prints one GUEST-RESULT line and powers off.
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tdforge/tdforge/internal/guest/dmverity"
	"github.com/tdforge/tdforge/internal/image/crypt"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// Config is written by the host test into the initramfs.
type Config struct {
	Modules     []string          `json:"modules"`
	DiskGUID    string            `json:"disk_guid"`
	Payload     policy.Payload    `json:"payload"`
	Key         string            `json:"key"`          // hex; a test key
	ImageSHA256 string            `json:"image_sha256"` // of the plaintext EROFS image
	Expect      map[string]string `json:"expect"`       // path -> sha256
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
	p := c.Payload
	var dev string
	for i := 0; i < 100; i++ { // virtio disks appear asynchronously
		if dev, err = dmverity.FindPartition(c.DiskGUID, p.Partition); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	verity, err := dmverity.Setup("verity-"+p.Name, dev, p)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(verity, &st); err != nil {
		return err
	}
	key, _ := hex.DecodeString(c.Key)
	length, params, err := crypt.Table(*p.Encryption, key, fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)), p.DataSize)
	if err != nil {
		return err
	}
	node, err := cryptSetup("crypt-"+p.Name, length, params)
	if err != nil {
		return err
	}
	got, err := digest(node)
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
		got, err := digest(filepath.Join(mnt, path))
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

// device-mapper ioctl ABI (include/uapi/linux/dm-ioctl.h), as in package
// dmverity.
const (
	dmIoctlSize   = 312
	dmSpecSize    = 40
	cmdDevCreate  = 3
	cmdDevSuspend = 6
	cmdTableLoad  = 9
	readonlyFlag  = 1
)

func header(name string, flags, targets uint32, data []byte) []byte {
	b := make([]byte, max(16<<10, dmIoctlSize+len(data)))
	le := binary.LittleEndian
	le.PutUint32(b[0:], 4)
	le.PutUint32(b[12:], uint32(len(b)))
	le.PutUint32(b[16:], dmIoctlSize)
	le.PutUint32(b[20:], targets)
	le.PutUint32(b[28:], flags)
	copy(b[48:48+127], name)
	copy(b[dmIoctlSize:], data)
	return b
}

func ioctl(nr uintptr, buf []byte) error {
	f, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), 3<<30|dmIoctlSize<<16|0xfd<<8|nr, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		return errno
	}
	return nil
}

// cryptSetup creates a read-only dm-crypt device with the table.
func cryptSetup(name string, length uint64, params string) (string, error) {
	b := header(name, 0, 0, nil)
	if err := ioctl(cmdDevCreate, b); err != nil {
		return "", fmt.Errorf("DM_DEV_CREATE: %w", err)
	}
	devnum := binary.LittleEndian.Uint64(b[40:])
	n := (dmSpecSize + len(params) + 1 + 7) &^ 7
	spec := make([]byte, n)
	binary.LittleEndian.PutUint64(spec[8:], length)
	binary.LittleEndian.PutUint32(spec[20:], uint32(n))
	copy(spec[24:], "crypt")
	copy(spec[dmSpecSize:], params)
	if err := ioctl(cmdTableLoad, header(name, readonlyFlag, 1, spec)); err != nil {
		return "", fmt.Errorf("DM_TABLE_LOAD crypt: %w", err)
	}
	if err := ioctl(cmdDevSuspend, header(name, 0, 0, nil)); err != nil {
		return "", fmt.Errorf("resuming: %w", err)
	}
	node := "/dev/mapper/" + name
	if err := unix.Mknod(node, unix.S_IFBLK|0o600, int(devnum)); err != nil {
		return "", err
	}
	return node, nil
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
