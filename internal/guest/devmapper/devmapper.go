// Package devmapper is the guest's one device-mapper client: it creates
// and removes mapped devices from tables of targets with ioctls on
// /dev/mapper/control (no dmsetup binary). dm-verity (package dmverity),
// dm-crypt (initd/unlock) and later dm-integrity tables all go through
// Create, so there is a single ioctl implementation.
package devmapper

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
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

// Target is one line of a device-mapper table: Length 512-byte sectors
// from Start mapped by target Type with Params (as dmsetup prints them).
// Params may hold a key in hex (dm-crypt, dm-integrity): an immutable
// string, never zeroed, only garbage collected; it must reach only the
// kernel, never a file or a log.
type Target struct {
	Start, Length uint64
	Type          string
	Params        string
}

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
func targetSpec(t Target) []byte {
	n := (dmSpecSize + len(t.Params) + 1 + 7) &^ 7
	b := make([]byte, n)
	le := binary.LittleEndian
	le.PutUint64(b[0:], t.Start)
	le.PutUint64(b[8:], t.Length)
	le.PutUint32(b[20:], uint32(n)) // next
	copy(b[24:24+dmMaxTypeName-1], t.Type)
	copy(b[dmSpecSize:], t.Params)
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

// Available reports whether device-mapper answers (nil) or why not.
func Available() error {
	f, err := openControl()
	if err != nil {
		return err
	}
	return f.Close()
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
	dev, perr := ParseMajMin(string(majmin))
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

// ParseMajMin parses a sysfs "major:minor" into a device number.
func ParseMajMin(s string) (uint64, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), ":")
	ma, err1 := strconv.ParseUint(a, 10, 32)
	mi, err2 := strconv.ParseUint(b, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad major:minor %q", s)
	}
	return unix.Mkdev(uint32(ma), uint32(mi)), nil
}

// DevNum returns the "major:minor" of block device path, the form tables
// name their underlying devices in.
func DevNum(path string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", fmt.Errorf("%s is not a block device", path)
	}
	return fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)), nil
}

// Create makes the mapped device name (with uuid, which may be empty)
// from targets, activates it and returns its node, /dev/mapper/<name>.
// readOnly loads the table read-only. The byte buffers Create builds,
// which may hold a key (dm-crypt), are zeroed before it returns; the
// targets' Params are Go strings, which cannot be zeroed: a key in them
// stays in the TD's (private) memory until the garbage collector reuses
// it. On any error nothing is left mapped.
func Create(name, uuid string, readOnly bool, targets ...Target) (string, error) {
	if name == "" || len(name) >= dmNameLen || strings.ContainsAny(name, "/ ") {
		return "", fmt.Errorf("device-mapper: invalid device name %q", name)
	}
	if len(uuid) >= dmUUIDLen || len(targets) == 0 {
		return "", fmt.Errorf("device-mapper %s: a uuid under %d bytes and at least one target are required", name, dmUUIDLen)
	}
	b := header(name, 0, 0, nil)
	copy(b[176:176+dmUUIDLen-1], uuid)
	if err := dmIoctl(cmdDevCreate, b); err != nil {
		return "", fmt.Errorf("device-mapper: DM_DEV_CREATE %s: %w", name, err)
	}
	devnum := binary.LittleEndian.Uint64(b[40:])
	fail := func(what string, err error) (string, error) {
		Remove(name)
		return "", fmt.Errorf("device-mapper %s: %s: %w", name, what, err)
	}
	// One allocation of the right size: append growing data would leave
	// copies of the key behind that nothing zeroes.
	specs := make([][]byte, len(targets))
	size := 0
	for i, t := range targets {
		specs[i] = targetSpec(t)
		size += len(specs[i])
	}
	data := make([]byte, 0, size)
	for _, s := range specs {
		data = append(data, s...)
		clear(s)
	}
	var flags uint32
	if readOnly {
		flags = dmReadonlyFlag
	}
	tb := header(name, flags, uint32(len(targets)), data)
	clear(data)
	err := dmIoctl(cmdTableLoad, tb)
	clear(tb)
	if err != nil {
		types := make([]string, len(targets))
		for i, t := range targets {
			types[i] = t.Type
		}
		return fail("DM_TABLE_LOAD ("+strings.Join(types, ", ")+" target)", err)
	}
	if err := dmIoctl(cmdDevSuspend, header(name, 0, 0, nil)); err != nil { // no SUSPEND flag: resume
		return fail("resuming", err)
	}
	node := filepath.Join(mapperDir, name)
	if err := EnsureNode(node, unix.S_IFBLK, devnum); err != nil {
		return fail("creating "+node, err)
	}
	return node, nil
}

// Remove removes the mapped device name and its node.
func Remove(name string) error {
	if err := dmIoctl(cmdDevRemove, header(name, 0, 0, nil)); err != nil {
		return fmt.Errorf("device-mapper: DM_DEV_REMOVE %s: %w", name, err)
	}
	os.Remove(filepath.Join(mapperDir, name))
	return nil
}

// EnsureNode makes path a device node of type typ (unix.S_IFBLK or
// S_IFCHR) for dev.
func EnsureNode(path string, typ uint32, dev uint64) error {
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
