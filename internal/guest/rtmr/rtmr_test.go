package rtmr

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-configfs-tsm/configfs/fakertmr"
	"github.com/google/go-tdx-guest/client/linuxabi"

	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/internal/tdx/sim"
)

func digest(s string) [48]byte { return sha512.Sum384([]byte(s)) }

func TestConfigfsFake(t *testing.T) {
	be := NewConfigfs(fakertmr.CreateRtmrSubsystem(t.TempDir()))
	var want [48]byte
	for _, s := range []string{"payload", "config"} {
		d := digest(s)
		if err := be.Extend(register.RTMR3, d); err != nil {
			t.Fatal(err)
		}
		want = register.Extend(want, d)
	}
	got, err := be.Read(register.RTMR3)
	if err != nil || got != want {
		t.Fatalf("Read(3) = %x, %v; want %x", got, err, want)
	}
	// The fake (like the kernel) refuses RTMR0/1 extends.
	if err := be.Extend(register.RTMR1, digest("x")); err == nil {
		t.Fatal("extending RTMR1 succeeded")
	}
	if err := be.Extend(register.MRTD, digest("x")); err == nil || !strings.Contains(err.Error(), "not an RTMR") {
		t.Fatalf("Extend(MRTD) = %v", err)
	}
}

func TestRootedClientTempConfigfs(t *testing.T) {
	root := t.TempDir()
	entry := filepath.Join(root, "tsm", "rtmrs", "rtmr3-a")
	if err := os.MkdirAll(entry, 0o755); err != nil {
		t.Fatal(err)
	}
	// configfs creates attributes with the entry; emulate that.
	for name, content := range map[string]string{"index": "3\n", "digest": strings.Repeat("\x00", 48), "tcg_map": "\n"} {
		if err := os.WriteFile(filepath.Join(entry, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	be, err := Open(Options{SysRoot: t.TempDir(), ConfigfsRoot: root, DevRoot: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if be.Name() != "configfs-tsm" {
		t.Fatalf("Open picked %s, want configfs-tsm", be.Name())
	}
	d := digest("m")
	if err := be.Extend(register.RTMR3, d); err != nil {
		t.Fatal(err)
	}
	// A plain directory cannot hash: the write must be exactly the digest
	// into the existing entry's digest attribute.
	b, _ := os.ReadFile(filepath.Join(entry, "digest"))
	if !bytes.Equal(b, d[:]) {
		t.Fatalf("digest attribute = %x, want %x", b, d)
	}
	if got, err := be.Read(register.RTMR3); err != nil || got != d {
		t.Fatalf("Read = %x, %v", got, err)
	}
	c := RootedClient{Root: root}
	if _, err := c.ReadFile("/etc/passwd"); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("ReadFile outside configfs = %v", err)
	}
}

func TestSysfsTempDir(t *testing.T) {
	sys := t.TempDir()
	dir := filepath.Join(sys, SysfsMeasurements)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, reg := range register.RTMRs {
		if err := os.WriteFile(filepath.Join(dir, reg.Key()+":sha384"), make([]byte, 48), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	be, err := Open(Options{SysRoot: sys, ConfigfsRoot: t.TempDir(), DevRoot: t.TempDir()})
	if err != nil || be.Name() != "sysfs" {
		t.Fatalf("Open = %v, %v; want sysfs", be, err)
	}
	d := digest("payload")
	if err := be.Extend(register.RTMR3, d); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "rtmr3:sha384"))
	if !bytes.Equal(b, d[:]) {
		t.Fatalf("sysfs write = %x, want exactly the 48-byte digest at offset 0", b)
	}
	if got, err := be.Read(register.RTMR3); err != nil || got != d {
		t.Fatalf("Read = %x, %v", got, err)
	}
	// Hex text rendering is accepted; other sizes are errors.
	os.WriteFile(filepath.Join(dir, "rtmr2:sha384"), []byte(hex.EncodeToString(d[:])+"\n"), 0o644)
	if got, err := be.Read(register.RTMR2); err != nil || got != d {
		t.Fatalf("Read hex = %x, %v", got, err)
	}
	os.WriteFile(filepath.Join(dir, "rtmr1:sha384"), []byte("short"), 0o644)
	if _, err := be.Read(register.RTMR1); err == nil || !strings.Contains(err.Error(), "want 48") {
		t.Fatalf("Read short = %v", err)
	}
}

func newSimDir(t *testing.T) string {
	dir := t.TempDir()
	z := strings.Repeat("00", 48)
	r := &sim.Registers{Platform: sim.Platform{MRTD: strings.Repeat("11", 48), RTMR: [3]string{strings.Repeat("aa", 48), strings.Repeat("bb", 48), strings.Repeat("cc", 48)}}, RTMR3: z}
	if err := sim.SaveRegisters(dir, r); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestSimulator(t *testing.T) {
	dir := newSimDir(t)
	be, err := Open(Options{SysRoot: t.TempDir(), ConfigfsRoot: t.TempDir(), DevRoot: t.TempDir(), Simulate: true, SimDir: dir})
	if err != nil || be.Name() != sim.Name {
		t.Fatalf("Open = %v, %v; want simulator", be, err)
	}
	if err := be.Extend(register.RTMR3, digest("a")); err != nil {
		t.Fatal(err)
	}
	if got, _ := be.Read(register.RTMR3); got != register.Replay(digest("a")) {
		t.Fatalf("RTMR3 = %x", got)
	}
}

func TestOpenNeverFallsBackSilently(t *testing.T) {
	simDir := newSimDir(t)
	dev := t.TempDir()
	// A regular file named tdx_guest is not a device.
	os.WriteFile(filepath.Join(dev, "tdx_guest"), nil, 0o600)
	opts := Options{SysRoot: t.TempDir(), ConfigfsRoot: t.TempDir(), DevRoot: dev, SimDir: simDir}
	_, err := Open(opts)
	if !errors.Is(err, ErrNoTDX) || !strings.Contains(err.Error(), "tdx.simulate is false") {
		t.Fatalf("Open without TDX or simulate = %v", err)
	}
	opts.Simulate = true
	opts.SimDir = t.TempDir() // not initialised
	_, err = Open(opts)
	if !errors.Is(err, ErrNoTDX) || !strings.Contains(err.Error(), "not initialised") {
		t.Fatalf("Open with empty simulator = %v", err)
	}
}

func TestIoctlABI(t *testing.T) {
	// _IOW('T', 3, 49 bytes) and _IOWR('T', 1, 1088 bytes).
	if CmdExtendRTMR != 0x40315403 || cmdExtendRTMRRead != 0x80315403 {
		t.Fatalf("extend ioctl = %#x / %#x", CmdExtendRTMR, cmdExtendRTMRRead)
	}
	if CmdGetReport0 != 0xc4405401 || linuxabi.IocTdxGetReport != 0xc4405401 {
		t.Fatalf("get report ioctl = %#x, go-tdx-guest has %#x", CmdGetReport0, linuxabi.IocTdxGetReport)
	}
	report := make([]byte, 1024)
	for i := range report {
		report[i] = byte(i / 48)
	}
	// RTMR3 begins at 864 (512 + 16 + 4*48 + 3*48).
	got, err := RTMRFromTDReport(report, register.RTMR3)
	if err != nil || !bytes.Equal(got[:], report[864:912]) {
		t.Fatalf("RTMR3 from TDREPORT = %x, %v", got, err)
	}
	if _, err := RTMRFromTDReport(report[:100], register.RTMR3); err == nil {
		t.Fatal("short TDREPORT accepted")
	}
	if _, err := NewIoctl(filepath.Join(t.TempDir(), "tdx_guest")).Read(register.RTMR3); err == nil {
		t.Fatal("Read on a missing device succeeded")
	}
}
