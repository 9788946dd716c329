package sim

import (
	"crypto/sha512"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/register"
)

func TestRTMRs(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenRTMRs(dir); err == nil || !strings.Contains(err.Error(), "not initialised") {
		t.Fatalf("uninitialised state: %v", err)
	}
	if err := SaveRegisters(dir, testRegs()); err != nil {
		t.Fatal(err)
	}
	be, err := OpenRTMRs(dir)
	if err != nil {
		t.Fatal(err)
	}
	start, _ := be.Read(register.RTMR3)
	want := start
	for _, s := range []string{"a", "b", "c"} {
		d := sha512.Sum384([]byte(s))
		if err := be.Extend(register.RTMR3, d); err != nil {
			t.Fatal(err)
		}
		want = register.Extend(want, d)
	}
	if got, _ := be.Read(register.RTMR3); got != want {
		t.Fatalf("RTMR3 = %x, want %x", got, want)
	}
	r, err := LoadRegisters(dir)
	if err != nil || r.RTMR3 != hex.EncodeToString(want[:]) {
		t.Fatalf("registers.json rtmr3 = %v, %v", r, err)
	}
	if got, _ := be.Read(register.RTMR1); hex.EncodeToString(got[:]) != r.RTMR[1] {
		t.Fatalf("RTMR1 = %x, want %s", got, r.RTMR[1])
	}
	if err := be.Extend(register.RTMR2, [48]byte{}); err == nil || !strings.Contains(err.Error(), "only RTMR3") {
		t.Fatalf("Extend(RTMR2) = %v", err)
	}
	if _, err := be.Read(register.MRTD); err == nil {
		t.Fatal("Read(MRTD) accepted")
	}
	st, _ := os.Stat(filepath.Join(dir, RegistersFile))
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("registers.json mode %v, want 0600 (root-only)", st.Mode().Perm())
	}
}

func TestLaunchPlatform(t *testing.T) {
	var mrtd [48]byte
	mrtd[0] = 1
	rtmr := [3][48]byte{{2}, {3}, {4}}
	p := NewPlatform(mrtd, rtmr, "0000000010000000", "e718060000000000")
	r := &Registers{Platform: p, RTMR3: strings.Repeat("00", 48)}
	for i, reg := range register.All {
		v, err := r.Value(reg)
		if err != nil {
			t.Fatal(err)
		}
		want := byte(i + 1)
		if reg == register.RTMR3 {
			want = 0
		}
		if v[0] != want {
			t.Errorf("%s = %x", reg, v[:1])
		}
	}
	if p.MRSEAM != hex.EncodeToString(ModuleMRSEAM[:]) || p.TEETCBSVN != ModuleTEETCBSVN {
		t.Errorf("module identity %+v", p)
	}
	entries, err := FWCfg(p, []byte("table"), []byte("log"), []byte("pki"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name)
	}
	if strings.Join(names, " ") != strings.Join([]string{FWCfgPlatform, FWCfgCCEL, FWCfgCCELACPI, FWCfgPKI}, " ") || string(entries[2].Data) != "table" {
		t.Errorf("fw_cfg entries %v", names)
	}
	// The body the quote carries is the platform's.
	body, err := Body(r, [64]byte{})
	if err != nil || body[offMRTD] != 1 || body[offRTMR0] != 2 {
		t.Fatalf("body: %v", err)
	}
}
