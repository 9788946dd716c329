package firmware

import (
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-eventlog/tcg"

	"github.com/tdforge/tdforge/internal/guest/fwcfg"
	"github.com/tdforge/tdforge/internal/tdx/ccel"
	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/internal/tdx/sim"
)

func fwEntry(t *testing.T, root, name, content string) {
	d := filepath.Join(root, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "raw"), []byte(content), 0o444); err != nil {
		t.Fatal(err)
	}
}

func TestInitFromFwCfg(t *testing.T) {
	fw := t.TempDir()
	h := func(c string) string { return strings.Repeat(c, 48) }
	log, rtmr0 := simCCEL(t, fw, false)
	fwEntry(t, fw, sim.FWCfgPlatform, `{"mrtd":"`+h("11")+`","rtmr":["`+rtmr0+`","`+h("bb")+`","`+h("cc")+`"],"td_attributes":"0000000010000000","xfam":"e718060000000000","mrseam":"`+h("00")+`","tee_tcb_svn":"00000000000000000000000000000000"}`)
	fwEntry(t, fw, sim.FWCfgPKI, `{"root_cert":"R","intermediate_cert":"I","pck_cert":"P","pck_key":"K","attestation_key":"A"}`)
	fwEntry(t, fw, sim.FWCfgCCEL, string(log))
	dir := filepath.Join(t.TempDir(), "tdx-sim")
	// A directory someone else left readable is made root-only.
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	regs, err := Init(fwcfg.Reader{Root: fw}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if regs.RTMR[1] != h("bb") || regs.RTMR3 != h("00") {
		t.Fatalf("registers %+v", regs)
	}
	// The state holds the simulator's private keys: root-only, so the
	// agent's uid cannot read them (it quotes through initd instead).
	st, _ := os.Stat(dir)
	if st.Mode().Perm() != 0o700 || st.Mode()&(os.ModeSetgid|os.ModeSetuid) != 0 || st.Sys().(*syscall.Stat_t).Uid != 0 || st.Sys().(*syscall.Stat_t).Gid != 0 {
		t.Fatalf("dir mode %v owner %d:%d, want 0700 root:root", st.Mode(), st.Sys().(*syscall.Stat_t).Uid, st.Sys().(*syscall.Stat_t).Gid)
	}
	for _, f := range []string{sim.PKIFile, sim.RegistersFile, sim.CCELFile} {
		fst, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fst.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v mode %v, want 0600", f, err, fst.Mode())
		}
	}
	pki, err := sim.LoadPKI(dir)
	if err != nil || pki.AttestationKey != "A" {
		t.Fatalf("pki %+v %v", pki, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, sim.CCELFile)); string(b) != string(log) {
		t.Fatalf("ccel changed although QEMU's ACPI blobs match the profile")
	}
	if regs.RTMR[0] != rtmr0 {
		t.Fatalf("RTMR0 %s, want %s", regs.RTMR[0], rtmr0)
	}
	if _, err := os.Stat(filepath.Join(dir, sim.CCELTableFile)); !os.IsNotExist(err) {
		t.Fatal("absent optional entry produced a file")
	}
	// Extends rewrite registers.json; it stays root-only.
	be, err := sim.OpenRTMRs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Extend(register.RTMR3, [48]byte{1}); err != nil {
		t.Fatal(err)
	}
	fst, _ := os.Stat(filepath.Join(dir, sim.RegistersFile))
	if fst.Mode().Perm() != 0o600 {
		t.Fatalf("registers.json mode %v after an extend", fst.Mode())
	}
	// A second Init in the same boot keeps the extended registers.
	again, err := Init(fwcfg.Reader{Root: fw}, dir)
	if err != nil || again.RTMR3 == h("00") {
		t.Fatalf("second Init reset RTMR3: %+v %v", again, err)
	}
}

func TestInitRejectsBadPlatform(t *testing.T) {
	fw := t.TempDir()
	fwEntry(t, fw, sim.FWCfgPlatform, `{"mrtd":"12","rtmr":["","",""]}`)
	if _, err := Init(fwcfg.Reader{Root: fw}, t.TempDir()); err == nil || !strings.Contains(err.Error(), "mrtd") {
		t.Fatalf("bad platform: %v", err)
	}
	fwEntry(t, fw, sim.FWCfgPlatform, `{"mrtd":"12","surprise":1}`)
	if _, err := Init(fwcfg.Reader{Root: fw}, t.TempDir()); err == nil || !strings.Contains(err.Error(), "surprise") {
		t.Fatalf("unknown field: %v", err)
	}
	if _, err := Init(fwcfg.Reader{Root: t.TempDir()}, t.TempDir()); err == nil || !strings.Contains(err.Error(), "-fw_cfg name=opt/tdforge/platform.json") {
		t.Fatalf("missing entry: %v", err)
	}
}

// simCCEL writes QEMU-like ACPI fw_cfg blobs into fw and returns a simulated
// CCEL whose ACPI events carry the profile's digests (the blobs' own, unless
// differ) and the RTMR0 it replays to.
func simCCEL(t *testing.T, fw string, differ bool) ([]byte, string) {
	t.Helper()
	var events []ccel.Event
	sep := sha512.Sum384([]byte{0, 0, 0, 0})
	events = append(events, ccel.Event{Register: register.RTMR0, Type: tcg.Separator, Digest: &sep, Data: []byte{0, 0, 0, 0}})
	for i, n := range ccel.ACPIBlobs {
		blob := []byte(fmt.Sprintf("qemu blob %d", i))
		fwEntry(t, fw, n, string(blob))
		profile := sha512.Sum384(blob)
		if differ && i == 2 {
			profile = sha512.Sum384([]byte("the profile's tables"))
		}
		events = append(events, ccel.Event{Register: register.RTMR0, Type: tcg.PlatformConfigFlags, Digest: &profile, Data: []byte(ccel.ACPIEventData)})
	}
	k := sha512.Sum384([]byte("kernel"))
	events = append(events, ccel.Event{Register: register.RTMR1, Type: tcg.EFIBootServicesApplication, Digest: &k, Data: []byte("k")})
	_, log, err := ccel.Encode(events)
	if err != nil {
		t.Fatal(err)
	}
	var reg [48]byte
	for _, e := range events[:4] {
		reg = sha512.Sum384(append(reg[:], e.Digest[:]...))
	}
	return log, hex.EncodeToString(reg[:])
}

func TestSimulatedFirmwareMeasuresQEMUsACPI(t *testing.T) {
	fw := t.TempDir()
	log, profileRTMR0 := simCCEL(t, fw, true)
	patched, rtmr0, changed, err := MeasureACPI(fwcfg.Reader{Root: fw}, log)
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 1 || !strings.Contains(changed[0], "etc/acpi/tables") {
		t.Fatalf("changed %v", changed)
	}
	if hex.EncodeToString(rtmr0[:]) == profileRTMR0 {
		t.Fatal("RTMR0 ignores the ACPI blobs QEMU provided")
	}
	// The patched log replays to the new RTMR0 and keeps its other events.
	_, again, changedAgain, err := MeasureACPI(fwcfg.Reader{Root: fw}, patched)
	if err != nil || len(changedAgain) != 0 || again != rtmr0 {
		t.Fatalf("patched log: %v %v %x", err, changedAgain, again)
	}
	if len(patched) != len(log) {
		t.Fatal("log length changed")
	}
	if _, _, _, err := MeasureACPI(fwcfg.Reader{Root: t.TempDir()}, log); err == nil {
		t.Fatal("missing ACPI blobs accepted")
	}
	if _, _, _, err := MeasureACPI(fwcfg.Reader{Root: fw}, []byte("garbage that is long enough to be read as a header")); err == nil {
		t.Fatal("garbage CCEL accepted")
	}
}
