package simtdx

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tdforge/tdforge/internal/fwcfg"
	"github.com/tdforge/tdforge/internal/rtmr"
	"github.com/tdforge/tdforge/internal/simstate"
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
	fwEntry(t, fw, simstate.FWCfgPlatform, `{"mrtd":"`+h("11")+`","rtmr":["`+h("aa")+`","`+h("bb")+`","`+h("cc")+`"],"td_attributes":"0000000010000000","xfam":"e718060000000000","mrseam":"`+h("00")+`","tee_tcb_svn":"00000000000000000000000000000000"}`)
	fwEntry(t, fw, simstate.FWCfgPKI, `{"root_cert":"R","intermediate_cert":"I","pck_cert":"P","pck_key":"K","attestation_key":"A"}`)
	fwEntry(t, fw, simstate.FWCfgCCEL, "ccel-bytes")
	dir := filepath.Join(t.TempDir(), "tdx-sim")
	gid := os.Getgid()
	regs, err := Init(fwcfg.Reader{Root: fw}, dir, gid)
	if err != nil {
		t.Fatal(err)
	}
	if regs.RTMR[1] != h("bb") || regs.RTMR3 != h("00") {
		t.Fatalf("registers %+v", regs)
	}
	st, _ := os.Stat(dir)
	if st.Mode().Perm() != 0o750 || st.Mode()&os.ModeSetgid == 0 {
		t.Fatalf("dir mode %v", st.Mode())
	}
	pki, err := simstate.LoadPKI(dir)
	if err != nil || pki.AttestationKey != "A" {
		t.Fatalf("pki %+v %v", pki, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, simstate.CCELFile)); string(b) != "ccel-bytes" {
		t.Fatalf("ccel %q", b)
	}
	if _, err := os.Stat(filepath.Join(dir, simstate.CCELTableFile)); !os.IsNotExist(err) {
		t.Fatal("absent optional entry produced a file")
	}
	// Extends rewrite registers.json; group ownership must survive.
	be, err := rtmr.OpenSimulator(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Extend(3, [48]byte{1}); err != nil {
		t.Fatal(err)
	}
	fst, _ := os.Stat(filepath.Join(dir, simstate.RegistersFile))
	if fst.Mode().Perm() != 0o640 || int(fst.Sys().(*syscall.Stat_t).Gid) != gid {
		t.Fatalf("registers.json mode %v gid %d", fst.Mode(), fst.Sys().(*syscall.Stat_t).Gid)
	}
	// A second Init in the same boot keeps the extended registers.
	again, err := Init(fwcfg.Reader{Root: fw}, dir, gid)
	if err != nil || again.RTMR3 == h("00") {
		t.Fatalf("second Init reset RTMR3: %+v %v", again, err)
	}
}

func TestInitRejectsBadPlatform(t *testing.T) {
	fw := t.TempDir()
	fwEntry(t, fw, simstate.FWCfgPlatform, `{"mrtd":"12","rtmr":["","",""]}`)
	if _, err := Init(fwcfg.Reader{Root: fw}, t.TempDir(), 0); err == nil || !strings.Contains(err.Error(), "mrtd") {
		t.Fatalf("bad platform: %v", err)
	}
	fwEntry(t, fw, simstate.FWCfgPlatform, `{"mrtd":"12","surprise":1}`)
	if _, err := Init(fwcfg.Reader{Root: fw}, t.TempDir(), 0); err == nil || !strings.Contains(err.Error(), "surprise") {
		t.Fatalf("unknown field: %v", err)
	}
	if _, err := Init(fwcfg.Reader{Root: t.TempDir()}, t.TempDir(), 0); err == nil || !strings.Contains(err.Error(), "-fw_cfg name=opt/tdforge/platform.json") {
		t.Fatalf("missing entry: %v", err)
	}
}
