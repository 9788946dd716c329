package quote

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/faketsm"
	test "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/verify"

	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/internal/testutil/tsmtest"
)

func rd(b byte) [64]byte {
	var r [64]byte
	for i := range r {
		r[i] = b + byte(i)
	}
	return r
}

func TestSimulatorReadsLiveRegisters(t *testing.T) {
	dir, pki := tsmtest.SimState(t)
	p, err := OpenSimulator(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != NameSimulator {
		t.Fatal(p.Name())
	}
	q1, err := p.Quote(rd(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := verify.RawTdxQuote(q1, &verify.Options{TrustedRoots: sim.RootPool(pki)}); err != nil {
		t.Fatal(err)
	}
	// initd extends RTMR3: the next quote must show it.
	regs, _ := sim.LoadRegisters(dir)
	regs.RTMR3 = strings.Repeat("cd", 48)
	if err := sim.SaveRegisters(dir, regs); err != nil {
		t.Fatal(err)
	}
	q2, err := p.Quote(rd(1))
	if err != nil {
		t.Fatal(err)
	}
	rtmr3 := q2[sim.BodyOffset+0x148+3*48 : sim.BodyOffset+0x148+4*48]
	if !bytes.Equal(rtmr3, bytes.Repeat([]byte{0xcd}, 48)) {
		t.Fatalf("RTMR3 in quote = %x", rtmr3)
	}
}

func TestOpenSimulatorMissingState(t *testing.T) {
	_, err := OpenSimulator(filepath.Join(t.TempDir(), "nope"))
	if err == nil || !strings.Contains(err.Error(), "initd writes it from fw_cfg "+sim.FWCfgPKI) {
		t.Fatalf("got %v", err)
	}
}

func TestOpenNeverFallsBackToSimulator(t *testing.T) {
	if _, err := os.Stat("/sys/kernel/config/tsm/report"); err == nil {
		t.Skip("this machine has configfs-tsm: Open would legitimately use it")
	}
	if _, err := os.Stat(DevicePath); err == nil {
		t.Skip("this machine has /dev/tdx_guest")
	}
	p, err := Open(false)
	if err == nil {
		t.Fatalf("Open(false) returned %s on a machine without TDX", p.Name())
	}
	if !strings.Contains(err.Error(), "no TDX quote backend") || !strings.Contains(err.Error(), "tdx.simulate") {
		t.Fatalf("unclear error: %v", err)
	}
}

func TestConfigfsTSM(t *testing.T) {
	p := &ConfigfsTSM{Client: tsmtest.Report(t, TSMProviderTDX)}
	if p.Name() != NameConfigfsTSM {
		t.Fatal(p.Name())
	}
	q, err := p.Quote(rd(7))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := sim.ReportData(q); got != rd(7) {
		t.Fatal("REPORTDATA not passed through configfs-tsm")
	}
	wrong := &ConfigfsTSM{Client: tsmtest.Report(t, "sev_guest")}
	if _, err := wrong.Quote(rd(7)); err == nil || !strings.Contains(err.Error(), `"sev_guest"`) {
		t.Fatalf("wrong provider accepted: %v", err)
	}
}

func TestConfigfsTSMRejectsNonQuote(t *testing.T) {
	// The stock fake returns a text outblob: not a quote.
	p := &ConfigfsTSM{Client: &faketsm.Client{Subsystems: map[string]configfsi.Client{"report": faketsm.Report611(0)}}, WantProvider: "fake"}
	if _, err := p.Quote(rd(1)); err == nil || !strings.Contains(err.Error(), "malformed quote") {
		t.Fatalf("got %v", err)
	}
}

func TestTDXGuestDevice(t *testing.T) {
	dir, _ := tsmtest.SimState(t)
	s, _ := OpenSimulator(dir)
	want := rd(9)
	q, _ := s.Quote(want)
	var report [1024]byte
	copy(report[:], "distinct TD report")
	tc := []test.TestCase{{Name: "sim", Input: want, Report: report, Quote: q}}

	dev, err := test.TcDevice(tc)
	if err != nil {
		t.Fatal(err)
	}
	p := &TDXGuestDevice{Source: dev}
	got, err := p.Quote(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, q) || p.Name() != NameTDXDevice {
		t.Fatal("device path did not return the quote")
	}
	qp, _ := test.TcQuoteProvider(tc)
	if got, err := (&TDXGuestDevice{Source: qp}).Quote(want); err != nil || !bytes.Equal(got, q) {
		t.Fatalf("quote provider path: %v", err)
	}
	// A backend answering with another REPORTDATA is refused.
	other := rd(10)
	qp2, _ := test.TcQuoteProvider([]test.TestCase{{Input: other, Quote: q}})
	if _, err := (&TDXGuestDevice{Source: qp2}).Quote(other); err == nil || !strings.Contains(err.Error(), "different REPORTDATA") {
		t.Fatalf("mismatched REPORTDATA accepted: %v", err)
	}
}
