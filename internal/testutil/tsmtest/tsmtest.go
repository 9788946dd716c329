// Package tsmtest gives tests a simulated TDX guest: root-only simulator
// state (internal/tdx/sim) and go-configfs-tsm's fake report subsystem
// answering with simulated quotes, as the kernel's TDX provider does.
package tsmtest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/faketsm"

	"github.com/tdforge/tdforge/internal/tdx/sim"
)

// SimState lays out simulator state as firmware.Init does, in a fresh
// directory only its owner can enter: a new PKI and a plain register file
// (sim.PlainRegisters) with MRTD 0xab.. and zero RTMRs. It returns the
// directory and the PKI. (It cannot use internal/testutil/simtd, which
// imports internal/tdx/quote, whose tests use this package.)
func SimState(t testing.TB) (string, *sim.PKI) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tdx-sim")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	pki, err := sim.NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	regs := sim.PlainRegisters(0xab, 0)
	if err := sim.SavePKI(dir, pki); err != nil {
		t.Fatal(err)
	}
	if err := sim.SaveRegisters(dir, regs); err != nil {
		t.Fatal(err)
	}
	return dir, pki
}

// Report is go-configfs-tsm's fake configfs whose report subsystem names
// provider and whose outblob is a simulated quote (over SimState) with
// the written inblob as REPORTDATA.
func Report(t testing.TB, provider string) *faketsm.Client {
	t.Helper()
	dir, _ := SimState(t)
	s, err := sim.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	sub := faketsm.Report611(0)
	base := sub.ReadAttr
	sub.ReadAttr = func(e *faketsm.ReportEntry, attr string) ([]byte, error) {
		switch attr {
		case "provider":
			return []byte(provider + "\n"), nil
		case "outblob":
			var r [64]byte
			copy(r[:], e.InAttrs["inblob"].Value)
			return s.Quote(r)
		}
		return base(e, attr)
	}
	return &faketsm.Client{Subsystems: map[string]configfsi.Client{"report": sub}}
}
