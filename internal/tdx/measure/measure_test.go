package measure

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/testutil/testdeps"

	"github.com/google/go-eventlog/ccel"
	"github.com/google/go-eventlog/extract"
	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"

	tdxccel "github.com/tdforge/tdforge/internal/tdx/ccel"
	tdxreg "github.com/tdforge/tdforge/internal/tdx/register"

	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/platform"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/tdvf"
)

func readFile(t testing.TB, p, hint string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%s needed (%s): %v", p, hint, err)
	}
	return b
}

func ovmf(t testing.TB) []byte {
	p := os.Getenv("TDFORGE_OVMF")
	if p == "" {
		p = "/usr/share/ovmf/OVMF.fd"
	}
	return readFile(t, p, "set TDFORGE_OVMF or install Debian's ovmf")
}

func goEventlogFixture(t testing.TB, name string) []byte { return testdeps.EventlogFixture(t, name) }

func realEvents(t *testing.T, name string) []tcg.Event {
	t.Helper()
	el, err := tcg.ParseEventLog(goEventlogFixture(t, name), tcg.ParseOpts{AllowPadding: true})
	if err != nil {
		t.Fatal(err)
	}
	return el.Events(register.HashSHA384)
}

func byMR(evs []tcg.Event, idx int) []tcg.Event {
	var out []tcg.Event
	for _, e := range evs {
		if int(e.Index) == idx {
			out = append(out, e)
		}
	}
	return out
}

// inRTMR returns the events of evs that extend RTMR rtmr.
func inRTMR(evs []tdxccel.Event, rtmr int) []tdxccel.Event {
	return slices.DeleteFunc(slices.Clone(evs), func(e tdxccel.Event) bool { return e.Register.RTMRIndex() != rtmr })
}

// sameTypes fails the test unless ours has as many events as the real log
// and reports each event whose type differs.
func sameTypes(t *testing.T, what string, ours []tdxccel.Event, real []tcg.Event) {
	t.Helper()
	if len(ours) != len(real) {
		t.Fatalf("%s: %d events, real log has %d", what, len(ours), len(real))
	}
	for i, e := range ours {
		if e.Type != real[i].Type {
			t.Errorf("%s event %d: type %s, real %s", what, i, e.Type.TCGString(), real[i].Type.TCGString())
		}
	}
}

// profileFromRealLog pins ACPI and boot-variable digests taken from the
// go-eventlog direct-boot TDX log, so every RTMR0 event except the CFV
// (a different firmware build) can be compared with a real boot.
func profileFromRealLog(t *testing.T, rtmr0 []tcg.Event) *platform.Profile {
	t.Helper()
	var acpi []string
	var boot []platform.BootVariable
	for _, e := range rtmr0 {
		switch e.Type {
		case evPlatformConfigFlags:
			acpi = append(acpi, hex.EncodeToString(e.Digest))
		case evEFIVariableBoot:
			nameLen := binary.LittleEndian.Uint64(e.Data[16:])
			name := e.Data[32 : 32+2*nameLen]
			var s []byte
			for i := 0; i < len(name); i += 2 {
				s = append(s, name[i])
			}
			boot = append(boot, platform.BootVariable{Name: string(s), Data: hex.EncodeToString(e.Data[32+2*nameLen:])})
		}
	}
	p := platform.Default()
	p.Name = "test-real-log"
	p.ACPI = &platform.ACPI{TableLoader: acpi[0], RSDP: acpi[1], Tables: acpi[2]}
	p.BootVariables = boot
	p.VM = platform.VM{CPUs: 2, MemoryMB: 8192}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRTMR0MatchesRealLog compares the RTMR0 model with a real TDX direct
// kernel boot log (go-eventlog CCEL_unpadded.data.bin).
func TestRTMR0MatchesRealLog(t *testing.T) {
	evs := realEvents(t, "CCEL_unpadded.data.bin")
	real0 := byMR(evs, 1)
	// The fixture's firmware has the duplicate-separator bug: its ready-to-boot
	// separator landed in RTMR0 instead of RTMR1. Drop it.
	if last := real0[len(real0)-1]; last.Type != evSeparator {
		t.Fatal("fixture changed: expected the trailing duplicate separator")
	}
	real0 = real0[:len(real0)-1]
	p := profileFromRealLog(t, real0)
	r, err := Compute(Inputs{Firmware: ovmf(t), MemoryMB: 8192, CPUs: 2, Profile: p})
	if err != nil {
		t.Fatal(err)
	}
	ours := inRTMR(r.FirmwareEvents, 0)
	sameTypes(t, "RTMR0", ours, real0)
	for i, e := range ours {
		re := real0[i]
		if i == 1 { // CFV: same shape, different firmware build
			if !bytes.Equal(e.Data[:42], re.Data[:42]) || len(e.Data) != len(re.Data) {
				t.Errorf("CFV event data shape %x, real %x", e.Data, re.Data)
			}
			continue
		}
		if !bytes.Equal(e.Digest[:], re.Digest) {
			t.Errorf("event %d (%s): digest %x, real %x", i, e.Description, e.Digest[:8], re.Digest[:8])
		}
		if i == 0 {
			// TdxTable data: same layout, and the TD HOB we rebuild for an
			// 8 GiB VM is byte-identical to the one QEMU built (digest above).
			if !bytes.Equal(e.Data, re.Data) {
				t.Errorf("TdxTable data %x, real %x", e.Data, re.Data)
			}
		}
		if e.Type == evEFIVariableDriverConfig && !bytes.Equal(e.Data, re.Data) {
			t.Errorf("%s variable data %x, real %x", e.Description, e.Data, re.Data)
		}
	}
	// The firmware's rules, checked on the real log itself: driver-config
	// digests cover the whole UEFI_VARIABLE_DATA, boot-variable digests the
	// variable's data only.
	for _, re := range real0 {
		switch re.Type {
		case evEFIVariableDriverConfig:
			if d := sha512.Sum384(re.Data); !bytes.Equal(d[:], re.Digest) {
				t.Error("real driver-config event digest is not SHA-384 of its data")
			}
		case evEFIVariableBoot:
			n := binary.LittleEndian.Uint64(re.Data[16:])
			if d := sha512.Sum384(re.Data[32+2*n:]); !bytes.Equal(d[:], re.Digest) {
				t.Error("real boot-variable digest is not SHA-384 of the variable data")
			}
		}
	}
	if r.RTMR[0] == nil {
		t.Fatalf("RTMR0 unknown with a complete profile: %v", r.Reasons)
	}
}

// TestRTMR1And2ShapeMatchRealLogs checks the kernel-side event shapes against
// the direct-boot log and the fixed firmware's separator placement against
// COS's published log.
func TestRTMR1And2ShapeMatchRealLogs(t *testing.T) {
	r, err := Compute(Inputs{Firmware: ovmf(t), Kernel: testdeps.Vmlinuz(t), Initrd: []byte("initrd bytes"), Cmdline: "console=ttyS0", MemoryMB: 2048, CPUs: 2})
	if err != nil {
		t.Fatal(err)
	}
	ours1, ours2 := inRTMR(r.FirmwareEvents, 1), inRTMR(r.FirmwareEvents, 2)
	// Direct boot log: kernel, Calling, EBS, EBS (its separator went to RTMR0).
	direct := realEvents(t, "CCEL_unpadded.data.bin")
	d1 := byMR(direct, 2)
	oursNoSep := slices.DeleteFunc(slices.Clone(ours1), func(e tdxccel.Event) bool { return e.Type == evSeparator })
	sameTypes(t, "RTMR1 without separator", oursNoSep, d1)
	for i, e := range oursNoSep {
		re := d1[i]
		if e.Type == evEFIAction && (!bytes.Equal(e.Data, re.Data) || !bytes.Equal(e.Digest[:], re.Digest)) {
			t.Errorf("RTMR1 action %q differs from real %q", e.Data, re.Data)
		}
		if e.Type == evEFIBootServicesApplication && !bytes.Equal(e.Data[24:], re.Data[24:]) {
			t.Errorf("kernel load event device path %x, real %x", e.Data[24:], re.Data[24:])
		}
	}
	// COS (fixed firmware): actions and separator in RTMR1, in our order.
	cos := byMR(realEvents(t, "cos-113-intel-tdx.bin"), 2)
	var cosFixed, ourFixed []string
	for _, e := range cos {
		if e.Type == evEFIAction || e.Type == evSeparator {
			cosFixed = append(cosFixed, e.Type.TCGString()+":"+hex.EncodeToString(e.Digest))
		}
	}
	for _, e := range ours1 {
		if e.Type != evEFIBootServicesApplication {
			ourFixed = append(ourFixed, e.Type.TCGString()+":"+hex.EncodeToString(e.Digest[:]))
		}
	}
	if strings.Join(cosFixed, ",") != strings.Join(ourFixed, ",") {
		t.Errorf("RTMR1 fixed events\n ours %v\n COS  %v", ourFixed, cosFixed)
	}
	// RTMR2: the stub's LoadOptions tag event as TDX firmware logs it.
	d2 := byMR(direct, 3)
	if len(d2) != 1 || len(ours2) != 2 {
		t.Fatalf("RTMR2 events: real %d (no initrd), ours %d (with initrd)", len(d2), len(ours2))
	}
	if ours2[0].Type != d2[0].Type || !bytes.Equal(ours2[0].Data, d2[0].Data) {
		t.Errorf("LoadOptions event %s %q, real %s %q", ours2[0].Type.TCGString(), ours2[0].Data, d2[0].Type.TCGString(), d2[0].Data)
	}
	if string(ours2[1].Data) != "Linux initrd\x00" || *ours2[1].Digest != sha512.Sum384([]byte("initrd bytes")) {
		t.Errorf("initrd event %q", ours2[1].Data)
	}
	want := sha512.Sum384(utf16le("initrd=initrd console=ttyS0", true)) // default profile: edk2 2025-08 prefixes
	if *ours2[0].Digest != want {
		t.Error("LoadOptions digest is not SHA-384 of the UTF-16LE \"initrd=initrd \"+cmdline with NUL")
	}
}

// TestCOSLogReplaysToPublishedRTMRs replays go-eventlog's real COS TDX CCEL
// to the RTMRs published in its tests.
func TestCOSLogReplaysToPublishedRTMRs(t *testing.T) {
	pub := []string{
		"3fa2f61f395b7f5feefb4ec2df61297f109ad8abcd6410c1b7df60f21f37b19297fc35e544039c7e1edece752afd17f6",
		"f62dbc072bd5d3f3438b7b35c39a727f5aea2ffc2473f43723953f530daf62504f0a7944aa62c41a86e8a878c2b122c1",
		"4969684dc87381fc3b3134176c8d8806eaf0a901859f5f70cfae8d17714b46c10a8de219048c9fc09f11f381a6fbe7c1",
	}
	var bank register.RTMRBank
	for i, h := range pub {
		b, _ := hex.DecodeString(h)
		bank.RTMRs = append(bank.RTMRs, register.RTMR{Index: i, Digest: b})
	}
	if _, err := ccel.ReplayAndExtract(goEventlogFixture(t, "cos-113-intel-tdx.table.bin"), goEventlogFixture(t, "cos-113-intel-tdx.bin"), bank, extract.Opts{Loader: extract.GRUB}); err != nil {
		t.Fatal(err)
	}
	// And our own replay of its events gives the same values.
	evs := realEvents(t, "cos-113-intel-tdx.bin")
	for i, h := range pub {
		var v [48]byte
		for _, e := range byMR(evs, i+1) {
			var d [48]byte
			copy(d[:], e.Digest)
			v = event.Extend(v, d)
		}
		if hex.EncodeToString(v[:]) != h {
			t.Errorf("RTMR%d replay %x, published %s", i, v, h)
		}
	}
}

func TestTDHOBLayout(t *testing.T) {
	md, err := tdvf.Parse(ovmf(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mb   int
		want []ramEntry
	}{
		{2048, []ramEntry{{0, 0x800000, false}, {0x800000, 0x6000, true}, {0x806000, 0x3000, false}, {0x809000, 0x2000, true},
			{0x80b000, 0x2000, true}, {0x80d000, 0x3000, false}, {0x810000, 0x10000, true}, {0x820000, 0x80000000 - 0x820000, false}}},
		{4096, nil},
	} {
		ram, err := ramLayout(md, uint64(tc.mb)<<20)
		if err != nil {
			t.Fatal(err)
		}
		if tc.want != nil && len(ram) != len(tc.want) {
			t.Fatalf("%d MiB: %v", tc.mb, ram)
		}
		for i := range tc.want {
			if ram[i] != tc.want[i] {
				t.Errorf("%d MiB entry %d: %+v want %+v", tc.mb, i, ram[i], tc.want[i])
			}
		}
		if tc.mb == 4096 {
			last := ram[len(ram)-1]
			if last.addr != 1<<32 || last.length != 2<<30 || last.added {
				t.Errorf("4 GiB: high RAM %+v", last)
			}
		}
		list, measured, err := TDHOB(md, uint64(tc.mb)<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(measured) != len(list)-8 || binary.LittleEndian.Uint16(list[len(list)-8:]) != 0xffff {
			t.Error("measured HOB must stop before the end-of-list HOB")
		}
		if end := binary.LittleEndian.Uint64(list[48:]); end != 0x809000+uint64(len(list)) {
			t.Errorf("EfiEndOfHobList %#x", end)
		}
	}
	if _, _, err := TDHOB(md, 4<<20); err == nil {
		t.Error("4 MiB VM accepted: the TempMem sections are above its RAM")
	}
}

func TestComputeUnknownsAndReplay(t *testing.T) {
	fw, k := ovmf(t), testdeps.Vmlinuz(t)
	rt := []event.Event{
		{Version: 1, Kind: event.KindPayload, Name: "model", Alg: event.AlgVerity, Digest: bytes.Repeat([]byte{1}, 32)},
		{Version: 1, Kind: event.KindConfig, Name: "runtime", Alg: event.AlgSHA256, Digest: bytes.Repeat([]byte{2}, 32)},
	}
	for _, p := range platform.List() {
		r, err := Compute(Inputs{Firmware: fw, Kernel: k, Initrd: []byte("x"), Cmdline: "quiet", MemoryMB: 2048, CPUs: 2, Profile: p, RTMR3Events: rt})
		if err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
		first := 0
		if p.ACPI == nil || p.BootVariables == nil {
			if r.RTMR[0] != nil || !strings.Contains(r.Reasons["rtmr0"], "ACPI") {
				t.Errorf("%s: RTMR0 must be unknown with an ACPI reason, got %v", p.Name, r.Reasons)
			}
			// Unpredictable digests are explicitly not pinned, never "".
			unpinned := 0
			for _, e := range r.Events["rtmr0"] {
				switch {
				case e.Digest == "":
					t.Errorf("%s: RTMR0 event %q has an empty digest", p.Name, e.Description)
				case !e.Pinned():
					unpinned++
				}
			}
			if unpinned == 0 {
				t.Errorf("%s: no RTMR0 event is marked %q", p.Name, refvalues.NotPinned)
			}
			first = 1
		} else if r.RTMR[0] == nil {
			t.Errorf("%s: RTMR0 unknown although the profile pins ACPI and boot variables: %v", p.Name, r.Reasons)
		}
		if r.MRTD == nil || r.RTMR[1] == nil || r.RTMR[2] == nil || r.RTMR[3] == nil {
			t.Fatalf("%s: unexpected unknowns %v", p.Name, r.Reasons)
		}
		for _, reg := range tdxreg.RTMRs[first:] {
			var v [48]byte
			for _, e := range r.Events[reg.Key()] {
				b, _ := hex.DecodeString(e.Digest)
				var d [48]byte
				copy(d[:], b)
				v = event.Extend(v, d)
			}
			if v != *r.Value(reg) {
				t.Errorf("%s: replay of %s events differs from the register", p.Name, reg)
			}
		}
		want3, _ := event.Replay(rt)
		if *r.RTMR[3] != want3 || r.Events["rtmr3"][0].Component != "payload:model" || r.Events["rtmr3"][1].Component != "config" {
			t.Errorf("%s: RTMR3 %x want %x", p.Name, r.RTMR[3], want3)
		}
		order, _ := tdvf.ParseOrder(p.PageAddOrder)
		if m, _ := tdvf.MRTD(fw, order); m != *r.MRTD {
			t.Errorf("%s: MRTD does not follow the profile's order", p.Name)
		}
	}
	// Variant rules change exactly the registers they should.
	get := func(name string) *Result {
		p, err := platform.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Compute(Inputs{Firmware: fw, Kernel: k, Initrd: []byte("x"), Cmdline: "quiet", MemoryMB: 2048, CPUs: 2, Profile: p})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a, b, c := get("qemu-8.2-tdx-ovmf-2024"), get("qemu-10.1-tdx-edk2-2025-02"), get("qemu-10.2-tdx-edk2-2025-08")
	if *a.MRTD == *b.MRTD || *b.MRTD != *c.MRTD {
		t.Error("MRTD must differ between two-pass and interleaved and agree between interleaved profiles")
	}
	if *a.RTMR[1] != *b.RTMR[1] || *b.RTMR[1] == *c.RTMR[1] {
		t.Error("RTMR1 must differ only where the setup-header patch differs")
	}
	if *a.RTMR[2] != *b.RTMR[2] || *b.RTMR[2] == *c.RTMR[2] {
		t.Error("RTMR2 must differ only where the initrd= placement differs")
	}
	if a.RTMR[3] != nil || a.Reasons["rtmr3"] == "" {
		t.Error("no runtime events must leave RTMR3 unknown with a reason")
	}
	// Shape mismatch.
	p := get("qemu-10.2-tdx-edk2-2025-08")
	_ = p
	prof := profileFromRealLog(t, byMR(realEvents(t, "CCEL_unpadded.data.bin"), 1)[:13])
	r, err := Compute(Inputs{Firmware: fw, MemoryMB: 4096, CPUs: 2, Profile: prof})
	if err != nil {
		t.Fatal(err)
	}
	if r.RTMR[0] != nil || !strings.Contains(r.Reasons["rtmr0"], "VM shape") {
		t.Errorf("shape mismatch must make RTMR0 unknown: %v", r.Reasons)
	}
	if r.Reasons["rtmr1"] == "" || r.Reasons["rtmr2"] == "" {
		t.Error("no kernel must leave RTMR1/RTMR2 unknown with reasons")
	}
}

func TestBadInputs(t *testing.T) {
	fw, k := ovmf(t), testdeps.Vmlinuz(t)
	code := readFile(t, "/usr/share/OVMF/OVMF_CODE.fd", "Debian ovmf package")
	for name, tc := range map[string]struct {
		in   Inputs
		want string
	}{
		"truncated firmware": {Inputs{Firmware: fw[:len(fw)-100], MemoryMB: 2048, CPUs: 2}, "truncated"},
		"code-only firmware": {Inputs{Firmware: code, MemoryMB: 2048, CPUs: 2}, "split OVMF_CODE.fd"},
		"non-PE kernel":      {Inputs{Kernel: []byte(strings.Repeat("ELF?", 200)), MemoryMB: 2048, CPUs: 2, Profile: mustProfile(t, "qemu-10.2-tdx-edk2-2025-08")}, "not a PE/COFF image"},
		"oversized cmdline":  {Inputs{Kernel: k, Cmdline: strings.Repeat("a", 2040), Initrd: []byte("x"), MemoryMB: 2048, CPUs: 2}, "exceeds the kernel's limit of 2047"},
		"non-ASCII cmdline":  {Inputs{Kernel: k, Cmdline: "root=é", MemoryMB: 2048, CPUs: 2}, "printable ASCII"},
		"no memory":          {Inputs{Kernel: k, CPUs: 2}, "must be positive"},
		"initrd twice":       {Inputs{Initrd: []byte("a"), InitrdDigest: &[48]byte{}, InitrdSize: 1, MemoryMB: 2048, CPUs: 2}, "not both"},
	} {
		_, err := Compute(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", name, err, tc.want)
		}
	}
}

func mustProfile(t *testing.T, n string) *platform.Profile {
	p, err := platform.Lookup(n)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCCELRoundTrip(t *testing.T) {
	prof := profileFromRealLog(t, byMR(realEvents(t, "CCEL_unpadded.data.bin"), 1)[:13])
	initrd := bytes.Repeat([]byte("initramfs"), 1000)
	r, err := Compute(Inputs{Firmware: ovmf(t), Kernel: testdeps.Vmlinuz(t), Initrd: initrd, Cmdline: "console=ttyS0 quiet", MemoryMB: 8192, CPUs: 2, Profile: prof})
	if err != nil {
		t.Fatal(err)
	}
	table, log, err := r.CCEL()
	if err != nil {
		t.Fatal(err)
	}
	if len(table) != 56 || len(log)%(64<<10) != 0 || log[len(log)-1] != 0xff {
		t.Fatalf("table %d bytes, log %d bytes", len(table), len(log))
	}
	var sum byte
	for _, c := range table {
		sum += c
	}
	if sum != 0 {
		t.Error("CCEL table checksum is wrong")
	}
	var bank register.RTMRBank
	for i := 0; i < 3; i++ {
		bank.RTMRs = append(bank.RTMRs, register.RTMR{Index: i, Digest: r.RTMR[i][:]})
	}
	if _, err := tcg.ParseAndReplay(log, bank.MRs(), tcg.ParseOpts{AllowPadding: true}); err != nil {
		t.Fatalf("tcg.ParseAndReplay: %v", err)
	}
	st, err := ccel.ReplayAndExtract(table, log, bank, extract.Opts{Loader: extract.UnsupportedLoader})
	if st == nil {
		t.Fatalf("ccel.ReplayAndExtract: %v", err)
	}
	if err != nil {
		t.Logf("extraction notes (replay succeeded): %v", err)
	}
	// A tampered register must not replay.
	bad := append([]byte(nil), r.RTMR[1][:]...)
	bad[0] ^= 1
	bank.RTMRs[1].Digest = bad
	if _, err := tcg.ParseAndReplay(log, bank.MRs(), tcg.ParseOpts{AllowPadding: true}); err == nil {
		t.Error("replay accepted a wrong RTMR1")
	}
	// Unknown registers cannot be encoded.
	r2, _ := Compute(Inputs{Firmware: ovmf(t), Kernel: testdeps.Vmlinuz(t), MemoryMB: 2048, CPUs: 2})
	if _, _, err := r2.CCEL(); err == nil || !strings.Contains(err.Error(), "RTMR0 is unknown") {
		t.Errorf("CCEL with unknown RTMR0: %v", err)
	}
}

func TestJSON(t *testing.T) {
	r, err := Compute(Inputs{Firmware: ovmf(t), Kernel: testdeps.Vmlinuz(t), Cmdline: "quiet", MemoryMB: 2048, CPUs: 2, RTMR3Events: []event.Event{}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "reasons", "platform", "events"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	if string(m["rtmr0"]) != "null" || string(m["platform"]) != `"qemu-10.2-tdx-edk2-2025-08"` {
		t.Errorf("rtmr0 %s platform %s", m["rtmr0"], m["platform"])
	}
	if string(m["rtmr3"]) != `"`+strings.Repeat("0", 96)+`"` {
		t.Errorf("empty runtime events must give a zero RTMR3, got %s", m["rtmr3"])
	}
	var ev map[string][]map[string]string
	json.Unmarshal(m["events"], &ev)
	if len(ev["rtmr0"]) != 13 || ev["rtmr0"][0]["component"] != "td-hob" || ev["rtmr1"][0]["component"] != "kernel" {
		t.Errorf("events %v", ev["rtmr0"])
	}
	if !strings.HasPrefix(string(b), "{\n  \"mrtd\": ") || strings.Index(string(b), `"rtmr3"`) > strings.Index(string(b), `"reasons"`) {
		t.Errorf("registers do not lead the document:\n%s", b)
	}
	r.SetUnknown(tdxreg.RTMR3, "not here")
	b, _ = r.JSON()
	var u struct {
		RTMR3   *string           `json:"rtmr3"`
		Reasons map[string]string `json:"reasons"`
	}
	if err := json.Unmarshal(b, &u); err != nil || u.RTMR3 != nil || u.Reasons["rtmr3"] != "not here" {
		t.Errorf("SetUnknown(RTMR3): rtmr3 %v reasons %v (%v)", u.RTMR3, u.Reasons, err)
	}
}
