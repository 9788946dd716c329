// Package measure models what Intel TDX firmware and the Linux EFI stub
// measure for a QEMU direct-kernel boot, and computes the golden MRTD and
// RTMR0..3 with the events behind each register.
//
// RTMR0 follows the platform profile's firmware event sequence (TD HOB, CFV,
// secure-boot variables, separator, ACPI blobs, boot variables); RTMR1 is the
// kernel's Authenticode digest and the fixed boot-manager events; RTMR2 is
// the EFI stub's LoadOptions and initrd events; RTMR3 replays tdforge's
// runtime events (internal/tdx/event).
package measure

import (
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"unicode/utf16"

	"github.com/google/go-eventlog/tcg"

	"github.com/tdforge/tdforge/internal/canonjson"
	"github.com/tdforge/tdforge/internal/tdx/authenticode"
	"github.com/tdforge/tdforge/internal/tdx/ccel"
	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/platform"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/internal/tdx/tdvf"
)

// TCG event types used by the model.
const (
	evSeparator                  = tcg.Separator
	evEventTag                   = tcg.EventTag
	evPlatformConfigFlags        = tcg.PlatformConfigFlags
	evEFIVariableDriverConfig    = tcg.EFIVariableDriverConfig
	evEFIVariableBoot            = tcg.EFIVariableBoot
	evEFIBootServicesApplication = tcg.EFIBootServicesApplication
	evEFIAction                  = tcg.EFIAction
	evEFIPlatformFirmwareBlob2   = tcg.EFIPlatformFirmwareBlob2
	evEFIHandoffTables2          = tcg.EFIHandoffTables2
)

// Fixed strings the firmware and the EFI stub log.
const (
	ActionCallingEFIApp   = "Calling EFI Application from Boot Option"
	ActionExitBootInvoke  = "Exit Boot Services Invocation"
	ActionExitBootSuccess = "Exit Boot Services Returned with Success"
	stubLoadOptionsMarker = "LOADED_IMAGE::LoadOptions"
)

// maxCmdline is x86 Linux's COMMAND_LINE_SIZE without the NUL, used when no
// kernel is given to read its own limit from.
const maxCmdline = 2047

// Inputs are the boot components and platform of one TD.
type Inputs struct {
	Firmware []byte // unified TDVF image (OVMF.fd); nil = MRTD/RTMR0 unknown
	Kernel   []byte // bzImage; nil = RTMR1/RTMR2 unknown
	// Initrd, or InitrdDigest (SHA-384) with InitrdSize when only the
	// digest is at hand. Both nil: no initrd.
	Initrd       []byte
	InitrdDigest *[48]byte
	InitrdSize   int64
	Cmdline      string
	MemoryMB     int
	CPUs         int
	Profile      *platform.Profile // nil = platform.Default()
	// RTMR3Events are the runtime events in extend order; nil = RTMR3
	// unknown, empty = RTMR3 stays zero.
	RTMR3Events []event.Event
	// CCMeasurement states whether the kernel's EFI stub measures
	// LoadOptions and the initrd through the EFI CC measurement protocol
	// (the manifest's kernel.cc_measurement); nil = detect (DetectStub).
	CCMeasurement *bool
}

// Result holds the computed registers and their events.
type Result struct {
	MRTD     *[48]byte
	RTMR     [4]*[48]byte      // nil = unknown, see Reasons
	Reasons  map[string]string // register name -> why it is unknown
	Notes    []string          // facts about the prediction worth showing
	Events   map[string][]refvalues.Event
	Platform string
	// Stub is what the kernel's EFI stub measures into RTMR2; nil when no
	// kernel was given or that could not be told (Reasons["rtmr2"]).
	Stub *Stub
	// FirmwareEvents are the RTMR0..2 events with log data, for the CCEL.
	FirmwareEvents []ccel.Event
}

// Compute predicts the registers for in.
func Compute(in Inputs) (*Result, error) {
	p := in.Profile
	if p == nil {
		p = platform.Default()
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if in.MemoryMB <= 0 || in.CPUs <= 0 {
		return nil, fmt.Errorf("memory (%d MiB) and cpus (%d) must be positive", in.MemoryMB, in.CPUs)
	}
	if in.Initrd != nil && in.InitrdDigest != nil {
		return nil, errors.New("give the initrd or its digest, not both")
	}
	r := &Result{Reasons: map[string]string{}, Events: map[string][]refvalues.Event{}, Platform: p.Name}
	var all []ccel.Event

	// MRTD.
	var md *tdvf.Metadata
	if in.Firmware == nil {
		r.Reasons[register.MRTD.Key()] = "no firmware given"
	} else {
		var err error
		if md, err = tdvf.Parse(in.Firmware); err != nil {
			return nil, fmt.Errorf("firmware: %w", err)
		}
		order, err := tdvf.ParseOrder(p.PageAddOrder)
		if err != nil {
			return nil, err
		}
		m, err := md.MRTD(in.Firmware, order)
		if err != nil {
			return nil, fmt.Errorf("firmware: %w", err)
		}
		r.MRTD = &m
	}

	ev0, why0, err := rtmr0Events(in, p, md)
	if err != nil {
		return nil, err
	}
	all = append(all, ev0...)
	if why0 != "" {
		r.Reasons[register.RTMR0.Key()] = why0
	}

	loadOptions, initrdDigest, initrdSize, err := bootStrings(in, p)
	if err != nil {
		return nil, err
	}
	if in.Kernel == nil {
		r.Reasons[register.RTMR1.Key()] = "no kernel given"
		r.Reasons[register.RTMR2.Key()] = "no kernel given: whether and what the EFI stub measures depends on it"
	} else {
		ev1, err := rtmr1Events(in, p, initrdSize)
		if err != nil {
			return nil, err
		}
		all = append(all, ev1...)
		// The same rule on every profile: the simulator is no kinder than
		// hardware, so a stub that cannot measure in a TD leaves RTMR2 zero
		// in simulation too.
		switch stub, err := DetectStub(in.Kernel, in.CCMeasurement); {
		case err != nil:
			r.Reasons[register.RTMR2.Key()] = err.Error()
		case stub.Measures:
			r.Stub = &stub
			all = append(all, rtmr2Events(loadOptions, initrdDigest)...)
		default:
			r.Stub = &stub
			r.Notes = append(r.Notes, "RTMR2 is zero (no events): "+stub.Why())
		}
	}

	// RTMR3.
	if in.RTMR3Events == nil {
		r.Reasons[register.RTMR3.Key()] = "no runtime events given (the manifest's payloads and runtime configuration determine RTMR3)"
	} else {
		for _, e := range in.RTMR3Events {
			ce, err := ccel.FromRuntime(e)
			if err != nil {
				return nil, fmt.Errorf("runtime event: %w", err)
			}
			all = append(all, ce)
		}
	}

	// Replay every register from its events.
	for _, reg := range register.RTMRs {
		list := []refvalues.Event{}
		evs := ccel.Of(all, reg)
		for _, e := range evs {
			re := e.Reference()
			if e.Digest == nil {
				// Unpredictable (e.g. ACPI on a real-TDX platform): explicitly
				// not pinned, never an empty digest to compare with.
				re.Digest = refvalues.NotPinned
			}
			list = append(list, re)
		}
		r.Events[reg.Key()] = list
		if v, known := ccel.Replay(evs, reg); known && r.Reasons[reg.Key()] == "" {
			r.RTMR[reg.RTMRIndex()] = &v
		}
		if slices.Contains(register.Firmware, reg) {
			r.FirmwareEvents = append(r.FirmwareEvents, evs...)
		}
	}
	return r, nil
}

func sha384(b []byte) *[48]byte {
	d := sha512.Sum384(b)
	return &d
}

func utf16le(s string, nul bool) []byte {
	u := utf16.Encode([]rune(s))
	if nul {
		u = append(u, 0)
	}
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

// EFI variable vendor GUIDs in on-disk byte order.
var (
	guidGlobalVariable  = tdvf.GUID(0x8be4df61, 0x93ca, 0x11d2, [8]byte{0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c})
	guidImageSecurityDB = tdvf.GUID(0xd719b2cb, 0x3d3a, 0x4596, [8]byte{0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f})
	// gUefiOvmfPkgTokenSpaceGuid: the vendor GUID of OVMF's "TdxTable".
	guidOvmfTokenSpace = tdvf.GUID(0x93bb96af, 0xb9f2, 0x4eb8, [8]byte{0x94, 0x62, 0xe0, 0xba, 0x74, 0x56, 0x42, 0x36})
)

// variableData renders UEFI_VARIABLE_DATA: GUID, name length (chars), data
// length, UTF-16LE name without NUL, data.
func variableData(guid []byte, name string, data []byte) []byte {
	n := utf16le(name, false)
	b := make([]byte, 32, 32+len(n)+len(data))
	copy(b, guid)
	binary.LittleEndian.PutUint64(b[16:], uint64(len(n)/2))
	binary.LittleEndian.PutUint64(b[24:], uint64(len(data)))
	b = append(b, n...)
	return append(b, data...)
}

func rtmr0Events(in Inputs, p *platform.Profile, md *tdvf.Metadata) ([]ccel.Event, string, error) {
	var reasons []string
	var ev []ccel.Event
	add := func(t tcg.EventType, d *[48]byte, data []byte, desc, comp string) {
		ev = append(ev, ccel.Event{Register: register.RTMR0, Type: t, Digest: d, Data: data, Description: desc, Component: comp})
	}
	// 1. TD HOB and 2. CFV.
	if md == nil {
		reasons = append(reasons, "no firmware given")
		add(evEFIHandoffTables2, nil, nil, "TdxTable (TD HOB)", "td-hob")
		add(evEFIPlatformFirmwareBlob2, nil, nil, "CFV", "firmware")
	} else {
		_, measured, err := TDHOB(md, uint64(in.MemoryMB)<<20)
		if err != nil {
			return nil, "", err
		}
		data := []byte{9}
		data = append(data, "TdxTable\x00"...)
		data = binary.LittleEndian.AppendUint64(data, 1)
		data = append(data, guidOvmfTokenSpace...)
		data = binary.LittleEndian.AppendUint64(data, md.TDHOB().MemoryAddress)
		add(evEFIHandoffTables2, sha384(measured), data, fmt.Sprintf("TdxTable (TD HOB for %d MiB)", in.MemoryMB), "td-hob")

		cfv, err := md.CFVBytes(in.Firmware)
		if err != nil {
			return nil, "", fmt.Errorf("firmware: %w", err)
		}
		// OVMF's SEC measurement logs a fixed placeholder name, NUL-terminated.
		desc := "Fv(XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX)\x00"
		data = append([]byte{byte(len(desc))}, desc...)
		data = binary.LittleEndian.AppendUint64(data, md.BySection(tdvf.CFV)[0].MemoryAddress)
		data = binary.LittleEndian.AppendUint64(data, uint64(len(cfv)))
		add(evEFIPlatformFirmwareBlob2, sha384(cfv), data, "CFV (configuration firmware volume)", "firmware")
	}
	// 3. Secure-boot variables. With secure boot off OVMF logs SecureBoot as
	// one 0x00 byte and PK, KEK, db, dbx empty (as in real TDX logs).
	for _, v := range []struct {
		guid []byte
		name string
		data []byte
	}{{guidGlobalVariable, "SecureBoot", []byte{0}}, {guidGlobalVariable, "PK", nil}, {guidGlobalVariable, "KEK", nil}, {guidImageSecurityDB, "db", nil}, {guidImageSecurityDB, "dbx", nil}} {
		d := variableData(v.guid, v.name, v.data)
		add(evEFIVariableDriverConfig, sha384(d), d, v.name, "secure-boot")
	}
	// 4. Separator.
	sep := []byte{0, 0, 0, 0}
	add(evSeparator, sha384(sep), sep, "separator", "firmware")
	// 5. ACPI.
	acpiWhy := ""
	if p.ACPI == nil {
		acpiWhy = "platform " + p.Name + " has no ACPI digests: " + p.ACPIUnknownReason
	} else if w := p.ShapeMismatch(in.CPUs, in.MemoryMB); w != "" {
		acpiWhy = w
	}
	if acpiWhy != "" {
		reasons = append(reasons, acpiWhy)
		for _, n := range ccel.ACPIBlobs {
			add(evPlatformConfigFlags, nil, []byte(ccel.ACPIEventData), ccel.ACPIEventData+" "+n, "acpi")
		}
	} else {
		ds, err := p.ACPI.Digests()
		if err != nil {
			return nil, "", err
		}
		for i, n := range ccel.ACPIBlobs {
			d := ds[i]
			add(evPlatformConfigFlags, &d, []byte(ccel.ACPIEventData), ccel.ACPIEventData+" "+n, "acpi")
		}
	}
	// 6. Boot variables: the digest covers the variable data only.
	if p.BootVariables == nil {
		reasons = append(reasons, "platform "+p.Name+" has no boot variables: "+p.BootVariablesUnknownReason)
		for _, n := range []string{"BootOrder", "Boot0000"} {
			add(evEFIVariableBoot, nil, nil, n, "boot-variables")
		}
	} else {
		for _, v := range p.BootVariables {
			data, err := hex.DecodeString(v.Data)
			if err != nil {
				return nil, "", fmt.Errorf("platform %s: boot variable %s: %w", p.Name, v.Name, err)
			}
			add(evEFIVariableBoot, sha384(data), variableData(guidGlobalVariable, v.Name, data), v.Name, "boot-variables")
		}
	}
	why := ""
	for i, s := range reasons {
		if i > 0 {
			why += "; "
		}
		why += s
	}
	return ev, why, nil
}

// bootStrings returns the UTF-16LE LoadOptions OVMF passes to the kernel and
// the initrd digest and size.
func bootStrings(in Inputs, p *platform.Profile) (loadOptions []byte, initrd *[48]byte, size uint64, err error) {
	for _, c := range in.Cmdline {
		if c < 0x20 || c > 0x7e {
			return nil, nil, 0, fmt.Errorf("cmdline: character %q is not printable ASCII; firmware widens each byte, so only printable ASCII is supported", c)
		}
	}
	switch {
	case in.Initrd != nil:
		initrd, size = sha384(in.Initrd), uint64(len(in.Initrd))
	case in.InitrdDigest != nil:
		if in.InitrdSize <= 0 {
			return nil, nil, 0, errors.New("initrd: a digest needs its size (InitrdSize)")
		}
		d := *in.InitrdDigest
		initrd, size = &d, uint64(in.InitrdSize)
	}
	opts := in.Cmdline
	if initrd != nil {
		if p.InitrdPlacement == platform.InitrdPrefix {
			opts = "initrd=initrd " + opts
		} else {
			opts += " initrd=initrd"
		}
	}
	limit := maxCmdline
	if in.Kernel != nil {
		if l, err := authenticode.CmdlineLimit(in.Kernel); err == nil {
			limit = l
		}
	}
	if len(opts) > limit {
		return nil, nil, 0, fmt.Errorf("cmdline: %d bytes (with the firmware's initrd= option: %d) exceeds the kernel's limit of %d bytes; shorten the command line", len(in.Cmdline), len(opts), limit)
	}
	return utf16le(opts, true), initrd, size, nil
}

func rtmr1Events(in Inputs, p *platform.Profile, initrdSize uint64) ([]ccel.Event, error) {
	k := in.Kernel
	desc := "kernel (Authenticode SHA-384)"
	if p.KernelSetupPatch {
		var err error
		k, err = authenticode.PatchQEMUSetupHeader(in.Kernel, authenticode.QEMUBoot{
			BelowFourG: authenticode.BelowFourG(uint64(in.MemoryMB) << 20),
			InitrdSize: initrdSize,
			Cmdline:    in.Cmdline,
		})
		if err != nil {
			return nil, err
		}
		desc = "kernel with QEMU setup-header patch (Authenticode SHA-384)"
	}
	d, err := authenticode.Digest(k)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	// UEFI_IMAGE_LOAD_EVENT: location (chosen by the firmware at run time,
	// 0 here), length, link-time address, device path length and OVMF's
	// device path VenMedia(QemuKernelLoaderFs)/File("kernel")/End.
	dp := []byte{0x04, 0x03, 0x14, 0x00}
	dp = append(dp, tdvf.GUID(0x1428f772, 0xb64a, 0x441e, [8]byte{0xb8, 0xc3, 0x9e, 0xbd, 0xd7, 0xf8, 0x93, 0xc7})...)
	name := utf16le("kernel", true)
	dp = append(dp, 0x04, 0x04, byte(4+len(name)), 0x00)
	dp = append(dp, name...)
	dp = append(dp, 0x7f, 0xff, 0x04, 0x00)
	data := binary.LittleEndian.AppendUint64(nil, 0)
	data = binary.LittleEndian.AppendUint64(data, uint64(len(k)))
	data = binary.LittleEndian.AppendUint64(data, 0)
	data = binary.LittleEndian.AppendUint64(data, uint64(len(dp)))
	data = append(data, dp...)
	ev := []ccel.Event{{Register: register.RTMR1, Type: evEFIBootServicesApplication, Digest: &d, Data: data, Description: desc, Component: "kernel"}}
	act := func(s string) ccel.Event {
		return ccel.Event{Register: register.RTMR1, Type: evEFIAction, Digest: sha384([]byte(s)), Data: []byte(s), Description: s, Component: "firmware"}
	}
	sep := []byte{0, 0, 0, 0}
	ev = append(ev, act(ActionCallingEFIApp),
		ccel.Event{Register: register.RTMR1, Type: evSeparator, Digest: sha384(sep), Data: sep, Description: "separator", Component: "firmware"},
		act(ActionExitBootInvoke), act(ActionExitBootSuccess))
	return ev, nil
}

// taggedEvent renders the stub's tagged-event description as TDX firmware
// logs it through the CC measurement protocol: the NUL-terminated text only
// (a TPM log would carry the tag ID and size first).
func taggedEvent(desc string) []byte { return append([]byte(desc), 0) }

func rtmr2Events(loadOptions []byte, initrd *[48]byte) []ccel.Event {
	ev := []ccel.Event{{Register: register.RTMR2, Type: evEventTag, Digest: sha384(loadOptions), Data: taggedEvent("LOADED_IMAGE::LoadOptions"),
		Description: "kernel command line (LoadOptions, UTF-16LE)", Component: "cmdline"}}
	if initrd != nil {
		ev = append(ev, ccel.Event{Register: register.RTMR2, Type: evEventTag, Digest: initrd, Data: taggedEvent("Linux initrd"),
			Description: "Linux initrd", Component: "initrd"})
	}
	return ev
}

// jsonResult is the JSON rendering of a Result: the registers as in a
// reference-values document, then the rest.
type jsonResult struct {
	refvalues.Registers
	Reasons  map[string]string            `json:"reasons"`
	Notes    []string                     `json:"notes,omitempty"`
	Platform string                       `json:"platform"`
	Events   map[string][]refvalues.Event `json:"events"`
}

// Value returns a register's value; nil when unknown.
func (r *Result) Value(reg register.Register) *[48]byte {
	if reg == register.MRTD {
		return r.MRTD
	}
	if reg.IsRTMR() {
		return r.RTMR[reg.RTMRIndex()]
	}
	return nil
}

// SetUnknown marks an RTMR unknown and records why (Reasons[reg.Key()]).
func (r *Result) SetUnknown(reg register.Register, reason string) {
	if !reg.IsRTMR() {
		return
	}
	r.RTMR[reg.RTMRIndex()] = nil
	if r.Reasons == nil {
		r.Reasons = map[string]string{}
	}
	r.Reasons[reg.Key()] = reason
}

// JSON renders the result: lowercase hex registers (null when unknown),
// reasons, platform and the events per register.
func (r *Result) JSON() ([]byte, error) {
	j := jsonResult{Reasons: r.Reasons, Notes: r.Notes, Platform: r.Platform, Events: r.Events}
	for _, reg := range register.All {
		if v := r.Value(reg); v != nil {
			j.Registers.Set(reg, v[:])
		}
	}
	return canonjson.Marshal(j)
}
