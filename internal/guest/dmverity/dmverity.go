// Package dmverity activates dm-verity targets for payload partitions in
// the guest, talking to device-mapper with ioctls on /dev/mapper/control
// (no dmsetup or veritysetup binary), and finds payload partitions by GPT
// disk GUID and partition index.
//
// The table is
//
//	1 <dev> <dev> 4096 4096 <data_blocks> <hash_start> sha256 <root> <salt>
//
// with data and hash on the same partition and hash_start = hash_offset/4096
// + 1: the kernel wants the block of the tree's top level, which follows the
// one-block verity superblock (the verity package writes byte-identical
// hash areas to `veritysetup format`, whose tree starts there too).
package dmverity

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tdforge/tdforge/internal/image/hashtree"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// Paths, overridable in tests.
var (
	controlPath = "/dev/mapper/control"
	mapperDir   = "/dev/mapper"
	sysMisc     = "/sys/class/misc/device-mapper/dev"
)

// device-mapper ioctl ABI (include/uapi/linux/dm-ioctl.h).
const (
	dmIoctlSize    = 312 // sizeof(struct dm_ioctl)
	dmSpecSize     = 40  // sizeof(struct dm_target_spec)
	dmNameLen      = 128
	dmUUIDLen      = 129
	dmMaxTypeName  = 16
	dmReadonlyFlag = 1 << 0
	cmdDevCreate   = 3
	cmdDevRemove   = 4
	cmdDevSuspend  = 6
	cmdTableLoad   = 9
	bufSize        = 16 << 10
)

func ioctlNum(nr uintptr) uintptr {
	return 3<<30 | dmIoctlSize<<16 | 0xfd<<8 | nr // _IOWR(DM_IOCTL, nr, struct dm_ioctl)
}

// header builds a dm_ioctl buffer for name with flags, followed by data.
func header(name string, flags uint32, targets uint32, data []byte) []byte {
	b := make([]byte, max(bufSize, dmIoctlSize+len(data)))
	le := binary.LittleEndian
	le.PutUint32(b[0:], 4) // interface version 4.0.0
	le.PutUint32(b[12:], uint32(len(b)))
	le.PutUint32(b[16:], dmIoctlSize)
	le.PutUint32(b[20:], targets)
	le.PutUint32(b[28:], flags)
	copy(b[48:48+dmNameLen-1], name)
	copy(b[dmIoctlSize:], data)
	return b
}

// targetSpec encodes one dm_target_spec with its NUL-terminated params,
// padded to 8 bytes.
func targetSpec(start, length uint64, typ, params string) []byte {
	n := (dmSpecSize + len(params) + 1 + 7) &^ 7
	b := make([]byte, n)
	le := binary.LittleEndian
	le.PutUint64(b[0:], start)
	le.PutUint64(b[8:], length)
	le.PutUint32(b[20:], uint32(n)) // next
	copy(b[24:24+dmMaxTypeName-1], typ)
	copy(b[dmSpecSize:], params)
	return b
}

func dmIoctl(nr uintptr, buf []byte) error {
	f, err := openControl()
	if err != nil {
		return err
	}
	defer f.Close()
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), ioctlNum(nr), uintptr(unsafe.Pointer(&buf[0])))
	if errno != 0 {
		return errno
	}
	return nil
}

// openControl opens the device-mapper control node, creating it from
// sysfs if devtmpfs has not.
func openControl() (*os.File, error) {
	f, err := os.OpenFile(controlPath, os.O_RDWR, 0)
	if err == nil || !os.IsNotExist(err) {
		if err != nil {
			return nil, fmt.Errorf("device-mapper: %w", err)
		}
		return f, nil
	}
	majmin, rerr := os.ReadFile(sysMisc)
	if rerr != nil {
		return nil, fmt.Errorf("device-mapper: %s missing and %s unreadable (is dm-mod loaded?): %w", controlPath, sysMisc, rerr)
	}
	dev, perr := parseMajMin(string(majmin))
	if perr != nil {
		return nil, fmt.Errorf("device-mapper: %s: %w", sysMisc, perr)
	}
	os.MkdirAll(filepath.Dir(controlPath), 0o755)
	if err := unix.Mknod(controlPath, unix.S_IFCHR|0o600, int(dev)); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("device-mapper: creating %s: %w", controlPath, err)
	}
	f, err = os.OpenFile(controlPath, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("device-mapper: %w", err)
	}
	return f, nil
}

func parseMajMin(s string) (uint64, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), ":")
	ma, err1 := strconv.ParseUint(a, 10, 32)
	mi, err2 := strconv.ParseUint(b, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad major:minor %q", s)
	}
	return unix.Mkdev(uint32(ma), uint32(mi)), nil
}

// Table returns the dm-verity table parameters for payload p whose data
// and hash live on the block device dev ("major:minor" or a path).
func Table(dev string, p policy.Payload) (length uint64, params string, err error) {
	if p.HashAlg != hashtree.HashAlg || p.DataBlockSize != hashtree.BlockSize || p.HashBlockSize != hashtree.BlockSize {
		return 0, "", fmt.Errorf("dm-verity %q: only sha256 with 4096-byte blocks is supported", p.Name)
	}
	if p.DataSize == 0 || p.DataSize%hashtree.BlockSize != 0 || p.HashOffset < p.DataSize || p.HashOffset%hashtree.BlockSize != 0 {
		return 0, "", fmt.Errorf("dm-verity %q: data_size %d / hash_offset %d must be 4096-byte multiples with hash_offset >= data_size", p.Name, p.DataSize, p.HashOffset)
	}
	root, err := hex.DecodeString(p.RootHash)
	if err != nil || len(root) != 32 {
		return 0, "", fmt.Errorf("dm-verity %q: root hash must be 64 hex digits", p.Name)
	}
	salt, err := hex.DecodeString(p.Salt)
	if err != nil || len(salt) > 256 {
		return 0, "", fmt.Errorf("dm-verity %q: salt must be hex, at most 256 bytes", p.Name)
	}
	saltArg := "-"
	if len(salt) > 0 {
		saltArg = hex.EncodeToString(salt)
	}
	blocks := p.DataSize / hashtree.BlockSize
	params = fmt.Sprintf("1 %s %s %d %d %d %d %s %s %s", dev, dev, hashtree.BlockSize, hashtree.BlockSize,
		blocks, hashtree.HashStartBlock(int64(p.HashOffset)), hashtree.HashAlg, hex.EncodeToString(root), saltArg)
	return p.DataSize / 512, params, nil
}

// checkSuperblock compares the partition's verity superblock with the
// policy, for a clear error before the kernel would fail I/O. The root
// hash in the table is what actually protects the data.
func checkSuperblock(device string, p policy.Payload) error {
	f, err := os.Open(device)
	if err != nil {
		return fmt.Errorf("dm-verity %q: %w", p.Name, err)
	}
	defer f.Close()
	b := make([]byte, hashtree.SuperblockSize)
	if _, err := f.ReadAt(b, int64(p.HashOffset)); err != nil {
		return fmt.Errorf("dm-verity %q: reading superblock at %d of %s: %w", p.Name, p.HashOffset, device, err)
	}
	salt, blocks, err := hashtree.ParseSuperblock(b)
	if err != nil {
		return fmt.Errorf("dm-verity %q: %s at offset %d: %w", p.Name, device, p.HashOffset, err)
	}
	want, _ := hex.DecodeString(p.Salt)
	if !bytes.Equal(salt, want) || blocks != p.DataSize/hashtree.BlockSize {
		return fmt.Errorf("dm-verity %q: superblock on %s (salt %x, %d blocks) does not match the policy (salt %s, %d blocks): wrong disk or partition", p.Name, device, salt, blocks, p.Salt, p.DataSize/hashtree.BlockSize)
	}
	return nil
}

// Setup creates a read-only dm-verity device called name over the block
// device holding payload p and returns the path of its device node
// (/dev/mapper/<name>).
func Setup(name, device string, p policy.Payload) (string, error) {
	if name == "" || len(name) >= dmNameLen || strings.ContainsAny(name, "/ ") {
		return "", fmt.Errorf("dm-verity: invalid device name %q", name)
	}
	var st unix.Stat_t
	if err := unix.Stat(device, &st); err != nil {
		return "", fmt.Errorf("dm-verity %q: %s: %w", p.Name, device, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", fmt.Errorf("dm-verity %q: %s is not a block device", p.Name, device)
	}
	if err := checkSuperblock(device, p); err != nil {
		return "", err
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	length, params, err := Table(dev, p)
	if err != nil {
		return "", err
	}
	b := header(name, 0, 0, nil)
	copy(b[176:176+dmUUIDLen-1], "TDFORGE-VERITY-"+name)
	if err := dmIoctl(cmdDevCreate, b); err != nil {
		return "", fmt.Errorf("dm-verity %q: DM_DEV_CREATE %s: %w", p.Name, name, err)
	}
	devnum := binary.LittleEndian.Uint64(b[40:])
	fail := func(what string, err error) (string, error) {
		Remove(name)
		return "", fmt.Errorf("dm-verity %q: %s: %w", p.Name, what, err)
	}
	if err := dmIoctl(cmdTableLoad, header(name, dmReadonlyFlag, 1, targetSpec(0, length, "verity", params))); err != nil {
		return fail("DM_TABLE_LOAD (table "+params+")", err)
	}
	if err := dmIoctl(cmdDevSuspend, header(name, 0, 0, nil)); err != nil { // no SUSPEND flag: resume
		return fail("resuming", err)
	}
	node := filepath.Join(mapperDir, name)
	if err := ensureNode(node, unix.S_IFBLK, devnum); err != nil {
		return fail("creating "+node, err)
	}
	return node, nil
}

// Remove removes the device-mapper device name and its node.
func Remove(name string) error {
	if err := dmIoctl(cmdDevRemove, header(name, 0, 0, nil)); err != nil {
		return fmt.Errorf("dm-verity: DM_DEV_REMOVE %s: %w", name, err)
	}
	os.Remove(filepath.Join(mapperDir, name))
	return nil
}

// ensureNode makes path a device node of type typ for dev.
func ensureNode(path string, typ uint32, dev uint64) error {
	var st unix.Stat_t
	if unix.Stat(path, &st) == nil {
		if st.Mode&unix.S_IFMT == typ && st.Rdev == dev {
			return nil
		}
		os.Remove(path)
	}
	os.MkdirAll(filepath.Dir(path), 0o755)
	return unix.Mknod(path, typ|0o600, int(dev))
}

// Kernel bundles FindPartition, Setup and Remove as methods, for callers
// that take them as an interface (initd's payload.Verity).
type Kernel struct{}

// FindPartition calls the package-level FindPartition.
func (Kernel) FindPartition(diskGUID string, index int) (string, error) {
	return FindPartition(diskGUID, index)
}

// Setup calls the package-level Setup.
func (Kernel) Setup(name, device string, p policy.Payload) (string, error) {
	return Setup(name, device, p)
}

// Remove calls the package-level Remove.
func (Kernel) Remove(name string) error { return Remove(name) }
