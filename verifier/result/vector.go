package result

import (
	"errors"
	"strings"

	"github.com/veraison/ear"

	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/verifier/verify"
)

// CheckRevoked names the check a service adds when the matching reference
// document has been revoked.
const CheckRevoked = "reference revocation"

// vector is the AR4SI trustworthiness vector of a report. Why each value:
//
//   - instance-identity 2 (trustworthy instance): the quote is signed by a
//     TDX quoting enclave whose PCK chain verifies to Intel's root and
//     REPORTDATA binds the service's nonce; 99 when that signature chain
//     fails, 1 when the quote cannot be parsed, 96 when REPORTDATA does not
//     bind the nonce and TLS key.
//   - configuration 2 (approved): TD attributes, XFAM, MRSEAM and the
//     minimum TEE TCB SVN equal the reference; 96 when one differs.
//   - executables 2 (approved runtime): MRTD and RTMR0..3, and the event
//     logs replayed into them, equal the reference (firmware, kernel,
//     command line, initrd, payloads); 33 (unrecognized) when one differs
//     or when MRTD or one of RTMR0..2 was accepted unpinned (unchecked
//     boot code), 3 (approved boot) when only RTMR3 was accepted unpinned
//     (payloads unchecked), 96 when the matching reference is revoked.
//   - file-system 2 (approved files): the payload file systems are
//     dm-verity volumes whose root hashes RTMR3 carries and the reference
//     pins; 32 when RTMR3 or its events differ; no claim when MRTD or
//     RTMR0..2 differ (unrecognized boot code measured the payloads) or
//     when any register was accepted unpinned.
//   - hardware 2 (genuine): Intel's chain and collateral verify and the TCB
//     is up to date; 32 when the TCB is out of date (needs patches) or for
//     a simulated TD the operator accepted (no TDX hardware); 96 when a
//     simulated quote meets a reference that is not a simulator build; 97
//     when the chain does not lead to Intel's root.
//   - runtime-opaque 2 (encrypted memory): TDX encrypts and
//     integrity-protects TD memory and the DEBUG attribute is clear; 96
//     when DEBUG is set; no claim for a simulated TD.
//   - storage-opaque and sourced-data: no claim; tdforge does not attest
//     sealed storage or data sources.
//
// A claim whose checks did not run (the appraisal stopped earlier) is 0,
// no claim; a result is never more trustworthy than its status.
func vector(r *verify.Report) ear.TrustVector {
	var tv ear.TrustVector
	if r == nil {
		return tv
	}
	authentic := false
	for _, c := range r.Checks {
		if c.Name == verify.CheckAuthenticity && c.Status == verify.Pass {
			authentic = true
		}
	}
	if authentic {
		tv.InstanceIdentity = ear.TrustworthyInstanceClaim
		tv.Configuration = ear.ApprovedConfigClaim
		tv.Executables = ear.ApprovedRuntimeClaim
		tv.FileSystem = ear.ApprovedFilesClaim
		tv.Hardware = ear.GenuineHardwareClaim
		tv.RuntimeOpaque = ear.EncryptedMemoryRuntimeClaim
		if r.Simulated {
			tv.Hardware = ear.UnsafeHardwareClaim
			tv.RuntimeOpaque = ear.NoClaim
		}
	}
	worse := func(c *ear.TrustClaim, v ear.TrustClaim) {
		if *c == ear.NoClaim || v.GetTier() > c.GetTier() || (v.GetTier() == c.GetTier() && v > *c) {
			*c = v
		}
	}
	if authentic && len(r.Unpinned) > 0 {
		// Registers accepted unpinned went unchecked: MRTD or RTMR0..2
		// leave the boot code unrecognized; RTMR3 alone leaves the boot
		// chain approved but the payloads unchecked. Either way the
		// payload measurements vouch for nothing.
		boot := false
		for _, k := range r.Unpinned {
			if !strings.EqualFold(k, "rtmr3") {
				boot = true
			}
		}
		if boot {
			worse(&tv.Executables, ear.UnrecognizedRuntimeClaim)
		} else {
			worse(&tv.Executables, ear.ApprovedBootClaim)
		}
		if tv.FileSystem == ear.ApprovedFilesClaim {
			tv.FileSystem = ear.NoClaim
		}
	}
	for _, c := range r.Checks {
		if c.Status != verify.Fail {
			continue
		}
		switch name := c.Name; {
		case name == verify.CheckFormat:
			worse(&tv.InstanceIdentity, ear.UnexpectedEvidenceClaim)
		case name == verify.CheckAuthenticity:
			worse(&tv.InstanceIdentity, ear.CryptoValidationFailedClaim)
			worse(&tv.Hardware, ear.UnrecognizedHardwareClaim)
		case name == verify.CheckTCB:
			worse(&tv.Hardware, ear.UnsafeHardwareClaim)
		case name == verify.CheckSimulated:
			worse(&tv.Hardware, ear.ContraindicatedHardwareClaim)
		case name == verify.CheckBinding:
			worse(&tv.InstanceIdentity, ear.UntrustworthyInstanceClaim)
		case name == verify.CheckDebug:
			if errors.Is(c.Cause, verify.ErrDebug) {
				worse(&tv.RuntimeOpaque, ear.VisibleMemoryRuntimeClaim)
			} else {
				worse(&tv.Configuration, ear.UnsupportableConfigClaim)
			}
		case name == verify.CheckXFAM || name == verify.CheckTCBSVN || name == verify.CheckMRSEAM:
			worse(&tv.Configuration, ear.UnsupportableConfigClaim)
		case name == CheckRevoked:
			worse(&tv.Executables, ear.ContraindicatedRuntimeClaim)
		case isRegister(name):
			worse(&tv.Executables, ear.UnrecognizedRuntimeClaim)
			if strings.HasSuffix(name, "RTMR3") {
				worse(&tv.FileSystem, ear.UnrecognizedFilesClaim)
			} else if tv.FileSystem == ear.ApprovedFilesClaim {
				// Unrecognized boot code extended RTMR3: its payload
				// measurements vouch for nothing.
				tv.FileSystem = ear.NoClaim
			}
		default:
			// Any other failed check (owner fields, reference problems)
			// is a configuration the reference does not support.
			worse(&tv.Configuration, ear.UnsupportableConfigClaim)
		}
	}
	return tv
}

// isRegister matches the register checks of package explain: "MRTD",
// "RTMR0".."RTMR3" and "events RTMRn".
func isRegister(name string) bool {
	name = strings.TrimPrefix(name, "events ")
	return name == "MRTD" || (strings.HasPrefix(name, "RTMR") && len(name) == 5)
}

// annotate is the annotated evidence: what the relying party may read once
// ear.status is affirming.
func annotate(r *verify.Report, in Input) map[string]any {
	ev := map[string]any{}
	if r == nil {
		return ev
	}
	ev["verdict"] = r.Headline()
	ev["simulated"] = r.Simulated
	if len(r.Unpinned) > 0 {
		// Registers the operator accepted unpinned, and what goes
		// unchecked with each (the reason for a warning status).
		un := map[string]any{}
		for _, k := range r.Unpinned {
			if reg, err := register.Parse(k); err == nil {
				un[k] = verify.Unchecked[reg]
			}
		}
		ev["accepted_unpinned"] = un
	}
	if r.Image != nil {
		ev["image"] = map[string]any{"name": r.Image.Name, "version": r.Image.Version, "dev": r.Image.Dev, "simulated": r.Image.Simulated}
	}
	for _, reg := range []string{"mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"} {
		if v, ok := in.Registers[reg]; ok {
			ev[reg] = v
		}
	}
	if in.SPKIHash != "" {
		ev["tls_spki_sha256"] = in.SPKIHash
	}
	if in.ReportData != "" {
		ev["report_data"] = in.ReportData
	}
	checks := make([]any, 0, len(r.Checks))
	for _, c := range r.Checks {
		checks = append(checks, map[string]any{"name": c.Name, "status": string(c.Status), "reason": c.Reason})
		if c.Name == verify.CheckTCB {
			ev["tcb_status"] = tcbStatus(c)
		}
	}
	ev["checks"] = checks
	if len(r.Mismatches) > 0 {
		var ms []any
		for _, m := range r.Mismatches {
			ms = append(ms, m.String())
		}
		ev["mismatches"] = ms
	}
	return ev
}

// tcbStatus summarizes the TCB check: "UpToDate" when it passed, else its
// status and reason.
func tcbStatus(c verify.Check) string {
	if c.Status == verify.Pass {
		return "UpToDate"
	}
	return string(c.Status) + ": " + c.Reason
}
