// Package verify decides whether a TDX quote and its event logs prove that a
// TD runs the image described by a reference-values document, in
// go-tdx-guest's order: open the quote once (ParseQuote, over its abi
// package), check authenticity (go-tdx-guest verify: PCK chain to Intel's
// root, TCB status from collateral) and the freshness and TLS-key binding of
// REPORTDATA, then the reference policy: registers, event-log replay and
// event diff from package explain, the other TD fields with go-tdx-guest
// validate.
//
// Reasons state facts; a Check's Cause lets a command add the flag that
// changes the outcome.
package verify

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/validate"
	gverify "github.com/google/go-tdx-guest/verify"
	"github.com/google/go-tdx-guest/verify/trust"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/quote"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/verifier/collateral"
	"github.com/tdforge/tdforge/verifier/explain"
)

// Status of a check.
type Status = explain.Status

// Check statuses.
const (
	Pass    = explain.Pass
	Fail    = explain.Fail
	Skipped = explain.Skipped
)

// Mismatch names the first differing event of a register.
type Mismatch = explain.Mismatch

// Check is one line of the report.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Reason string `json:"reason"`
	// Cause is the fact a FAIL or SKIPPED check rests on, when a caller may
	// want to advise on it (e.g. ErrSimulated, *collateral.NetworkError);
	// commands turn it into a hint. Not serialized.
	Cause error `json:"-"`
}

// Facts behind checks that an option of the verifier changes. The library
// states them; commands add the flag that changes the outcome.
var (
	ErrSimulated   = errors.New("the quote is signed by the TDX simulator, not Intel TDX hardware")
	ErrUnknownRoot = errors.New("the PCK chain root is not Intel's SGX Root CA")
	ErrDebug       = errors.New("the TD has the DEBUG attribute set")
	ErrHalfBinding = errors.New("a nonce and a TLS SPKI hash must be given together")
	ErrNoSimRoot   = errors.New("simulated quotes are allowed but no simulator root certificate was given")
	// ErrUnpinned: the reference leaves a register open (null, no
	// accepted value), so what it measures goes unchecked.
	ErrUnpinned = errors.New("the reference does not pin this register")
)

// Unchecked names, per register, what goes unchecked when the register is
// not pinned: the verdict line of an accepted unpinned register.
var Unchecked = map[register.Register]string{
	register.MRTD:  "TD firmware unchecked",
	register.RTMR0: "ACPI tables, TD HOB and boot variables unchecked",
	register.RTMR1: "kernel unchecked",
	register.RTMR2: "kernel command line and initrd (with the boot policy) unchecked",
	register.RTMR3: "payloads and runtime configuration unchecked",
}

// Error kinds of a report that could not reach a verdict on the evidence.
const (
	ErrInput   = "input"   // unusable input (bad quote file, bad options, bad reference)
	ErrNetwork = "network" // collateral could not be fetched
)

// Options configure a verification.
type Options struct {
	// Reference is the image's reference values (required).
	Reference *refvalues.Document
	// ReferenceCheck is the outcome of checking the reference document's
	// signature (nil: not checked, reported as SKIPPED).
	ReferenceCheck *Check
	// AllowDebug accepts a TD with the DEBUG attribute.
	AllowDebug bool
	// AllowSimulated accepts quotes signed by a simulator root in SimRoots.
	AllowSimulated bool
	SimRoots       *x509.CertPool
	// Getter supplies Intel PCS collateral (e.g. a collateral.Bundle); nil
	// fetches online.
	Getter trust.HTTPSGetter
	// Now is the time certificates and collateral are checked at (zero: now).
	Now time.Time
	// Nonce and SPKIHash are the verifier's nonce and the SHA-256 of the TLS
	// SubjectPublicKeyInfo it connected to; REPORTDATA must equal
	// attestation.ReportData(Nonce, *SPKIHash). Both nil: not checked.
	Nonce    []byte
	SPKIHash *[32]byte
	// AcceptUnpinned lists registers the operator accepts unpinned (null
	// in the reference, no accepted value). Any other unpinned register
	// makes the verdict NOT TRUSTED.
	AcceptUnpinned []register.Register
}

// Evidence is what a TD presents.
type Evidence struct {
	Quote      []byte
	CCEL       []byte
	CCELTable  []byte
	RuntimeLog []byte
	// CCELAbsent is the agent's reason for sending no CCEL (reported, not
	// trusted).
	CCELAbsent string
	// Claimed is the agent's own account of REPORTDATA (untrusted; used only
	// to explain a binding failure).
	Claimed *attestation.ReportDataInfo
}

// QuoteInfo summarizes the quote's TD fields.
type QuoteInfo struct {
	ReportData   string `json:"report_data"`
	TDAttributes string `json:"td_attributes"`
	XFAM         string `json:"xfam"`
	TEETCBSVN    string `json:"tee_tcb_svn"`
	MRSEAM       string `json:"mrseam"`
	FMSPC        string `json:"fmspc,omitempty"`
}

// Report is the verification outcome.
type Report struct {
	Verdict   string `json:"verdict"`
	Trusted   bool   `json:"trusted"`
	Simulated bool   `json:"simulated"`
	// Unpinned lists the registers (keys) the operator accepted unpinned
	// and that are unpinned here; a trusted verdict is then qualified (see
	// Headline).
	Unpinned   []string                `json:"accepted_unpinned,omitempty"`
	ErrorKind  string                  `json:"error_kind,omitempty"`
	Image      *refvalues.Image        `json:"reference_image,omitempty"`
	Checks     []Check                 `json:"checks"`
	Mismatches []Mismatch              `json:"mismatches,omitempty"`
	Registers  []explain.RegisterState `json:"registers,omitempty"`
	Events     []explain.LogEvent      `json:"events,omitempty"`
	Quote      *QuoteInfo              `json:"quote,omitempty"`
}

// Verdicts.
const (
	VerdictTrusted    = "TRUSTED"
	VerdictSimulated  = "TRUSTED (SIMULATED)"
	VerdictNotTrusted = "NOT TRUSTED"
)

// DebugSet reports whether TD attributes (8 bytes, little endian, as in
// the quote body) have the DEBUG bit (bit 0) set.
func DebugSet(attrs []byte) bool {
	return len(attrs) == 8 && binary.LittleEndian.Uint64(attrs)&1 != 0
}

func (r *Report) add(name string, st Status, format string, args ...any) {
	r.addCause(name, st, nil, format, args...)
}

func (r *Report) addCause(name string, st Status, cause error, format string, args ...any) {
	r.Checks = append(r.Checks, Check{Name: name, Status: st, Reason: fmt.Sprintf(format, args...), Cause: cause})
}

func (r *Report) fail(kind, name, format string, args ...any) *Report {
	return r.failCause(kind, name, nil, format, args...)
}

func (r *Report) failCause(kind, name string, cause error, format string, args ...any) *Report {
	if r.ErrorKind == "" {
		r.ErrorKind = kind
	}
	r.addCause(name, Fail, cause, format, args...)
	return r.finish()
}

// Failed reports whether a check named name failed.
func (r *Report) Failed(name string) bool {
	return slices.ContainsFunc(r.Checks, func(c Check) bool { return c.Name == name && c.Status == Fail })
}

func (r *Report) finish() *Report {
	authentic := false
	r.Trusted = r.ErrorKind == ""
	for _, c := range r.Checks {
		if c.Status == Fail {
			r.Trusted = false
		}
		if c.Name == CheckAuthenticity && c.Status == Pass {
			authentic = true
		}
	}
	r.Trusted = r.Trusted && authentic
	switch {
	case !r.Trusted:
		r.Verdict = VerdictNotTrusted
	case r.Simulated:
		r.Verdict = VerdictSimulated
	default:
		r.Verdict = VerdictTrusted
	}
	return r
}

// Headline is the verdict as the first line of a report: a trusted verdict
// names each accepted unpinned register and what goes unchecked, e.g.
// "TRUSTED, RTMR0 NOT PINNED: ACPI tables, TD HOB and boot variables
// unchecked".
func (r *Report) Headline() string {
	h := r.Verdict
	if !r.Trusted {
		return h
	}
	for _, k := range r.Unpinned {
		reg, err := register.Parse(k)
		if err != nil {
			continue
		}
		h += ", " + reg.Name() + " NOT PINNED: " + Unchecked[reg]
	}
	return h
}

// Check names.
const (
	CheckReference    = "reference values signature"
	CheckFormat       = "quote format"
	CheckAuthenticity = "quote authenticity"
	CheckTCB          = "TCB status"
	CheckSimulated    = "simulated platform"
	CheckBinding      = "freshness and TLS binding"
	CheckDebug        = "TD attributes"
	CheckXFAM         = "XFAM"
	CheckTCBSVN       = "minimum TEE TCB SVN"
	CheckMRSEAM       = "MRSEAM"
	CheckMRConfigID   = "MRCONFIGID"
	CheckMROwner      = "MROWNER"
	CheckMROwnerCfg   = "MROWNERCONFIG"
)

// Verify checks ev against opts and returns the report; it never returns
// nil. ctx bounds nothing yet beyond early cancellation. It is CheckQuote
// followed by Against.
func Verify(ctx context.Context, ev Evidence, opts Options) *Report {
	if opts.Reference == nil {
		return new(CheckedQuote).Against(opts)
	}
	return CheckQuote(ctx, ev, opts).Against(opts)
}

// CheckedQuote is evidence whose quote was checked once, whatever the
// reference: its format, authenticity (signature chain, collateral, TCB)
// and the binding of REPORTDATA. Against appraises it with a reference, as
// often as there are references to try.
type CheckedQuote struct {
	ev   Evidence
	q    *pb.QuoteV4
	regs explain.Quote
	// part holds the checks so far, the error kind, Simulated and the
	// quote summary; binding the REPORTDATA check, which a report lists
	// after the reference's simulated-platform check.
	part    Report
	binding []Check
	// ok: the checks so far let the appraisal go on to a reference.
	ok bool
}

// CheckQuote runs the reference-independent checks of Verify on ev, with
// opts' Nonce, SPKIHash, AllowSimulated, SimRoots, Getter and Now (its
// reference fields are not used).
func CheckQuote(ctx context.Context, ev Evidence, opts Options) (c *CheckedQuote) {
	c = &CheckedQuote{ev: ev}
	r := &c.part
	// Evidence is untrusted input parsed by third-party code: a crash there
	// is a failed check, never a crashed verifier.
	defer func() {
		if p := recover(); p != nil {
			c.ok = false
			r.fail(ErrInput, CheckFormat, "malformed evidence: a parser failed (%v)", p)
		}
	}()
	if err := ctx.Err(); err != nil {
		r.fail(ErrInput, CheckFormat, "cancelled: %v", err)
		return c
	}
	if (opts.Nonce == nil) != (opts.SPKIHash == nil) {
		r.failCause(ErrInput, CheckBinding, ErrHalfBinding, "%v", ErrHalfBinding)
		return c
	}
	if opts.AllowSimulated && opts.SimRoots == nil {
		r.failCause(ErrInput, CheckAuthenticity, ErrNoSimRoot, "%v", ErrNoSimRoot)
		return c
	}

	// Quote format.
	q, regs, err := ParseQuote(ev.Quote)
	if err != nil {
		r.fail(ErrInput, CheckFormat, "%v (%d bytes)", err, len(ev.Quote))
		return c
	}
	body := q.GetTdQuoteBody()
	r.Quote = &QuoteInfo{
		ReportData:   hex.EncodeToString(body.GetReportData()),
		TDAttributes: hex.EncodeToString(body.GetTdAttributes()),
		XFAM:         hex.EncodeToString(body.GetXfam()),
		TEETCBSVN:    hex.EncodeToString(body.GetTeeTcbSvn()),
		MRSEAM:       hex.EncodeToString(body.GetMrSeam()),
	}
	r.add(CheckFormat, Pass, "TDX quote v4, %d bytes", len(ev.Quote))

	// Authenticity.
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	if fail := r.authenticate(q, opts, now); fail {
		return c
	}

	// Freshness and binding.
	var b Report
	b.binding(body.GetReportData(), ev.Claimed, opts)
	c.binding = b.Checks
	c.q, c.regs, c.ok = q, regs, true
	return c
}

// Against appraises the checked quote and its logs with opts' Reference,
// ReferenceCheck, AllowDebug and AcceptUnpinned (the quote-level options
// were CheckQuote's) and returns the report; it never returns nil and
// does not change c.
func (c *CheckedQuote) Against(opts Options) (out *Report) {
	r := &Report{}
	defer func() {
		if p := recover(); p != nil {
			r.Trusted = false
			out = r.fail(ErrInput, CheckFormat, "malformed evidence: a parser failed (%v)", p)
		}
	}()
	if opts.Reference == nil {
		return r.fail(ErrInput, "reference values", "no reference values given")
	}
	img := opts.Reference.Image
	r.Image = &img
	if opts.ReferenceCheck != nil {
		r.Checks = append(r.Checks, *opts.ReferenceCheck)
	} else {
		r.add(CheckReference, Skipped, "no reference key given: the reference document is trusted as read")
	}
	r.Checks = append(r.Checks, c.part.Checks...)
	r.ErrorKind, r.Simulated = c.part.ErrorKind, c.part.Simulated
	if c.part.Quote != nil {
		qi := *c.part.Quote
		r.Quote = &qi
	}
	if !c.ok {
		return r.finish()
	}
	if r.Simulated {
		if !img.Dev || !img.Simulated {
			r.add(CheckSimulated, Fail, "simulated quote, but the reference image %q is not marked dev and simulated", img.Name)
		} else {
			r.add(CheckSimulated, Pass, "reference image %q is a dev image built for the simulator", img.Name)
		}
	}
	r.Checks = append(r.Checks, c.binding...)
	ev, q, regs := c.ev, c.q, c.regs

	// Registers and events: explain compares each once.
	a := explain.Analyze(opts.Reference, regs, ev.CCEL, ev.CCELTable, ev.RuntimeLog)
	_, r.Unpinned = SplitUnpinned(a, opts.AcceptUnpinned)
	for _, st := range a.Registers {
		res := st.Result()
		if !st.Unpinned() {
			r.add(res.Name, res.Status, "%s", res.Reason)
			continue
		}
		reg, _ := register.Parse(st.Name)
		if slices.Contains(r.Unpinned, st.Name) {
			r.add(res.Name, Skipped, "NOT PINNED, accepted by the options: %s (%s)", Unchecked[reg], st.Reason)
			continue
		}
		r.addCause(res.Name, Fail, ErrUnpinned, "NOT PINNED: the reference value is null (%s), so %s", st.Reason, Unchecked[reg])
	}

	// The rest of the TD policy from the reference values.
	if err := r.policy(q, opts); err != nil {
		return r.fail(ErrInput, "reference values", "%v", err)
	}

	r.Registers = a.Registers
	r.Events = a.Events
	r.Mismatches = a.Mismatches
	absent := ""
	if ev.CCELAbsent != "" && len(ev.CCEL) == 0 {
		absent = " (the agent says: " + ev.CCELAbsent + ")"
	}
	for _, res := range a.Results {
		if res.Name == explain.CheckCCEL && res.Status == Skipped {
			res.Reason += absent
		}
		// An accepted unpinned register is checked through its events
		// only: without its log they would all go unchecked.
		if reg, ok := strings.CutPrefix(res.Name, "events "); ok && res.Status == Skipped &&
			slices.Contains(r.Unpinned, strings.ToLower(reg)) && len(opts.Reference.Events[strings.ToLower(reg)]) > 0 {
			log, why := "the firmware event log (CCEL)", absent
			if reg == register.RTMR3.Name() {
				log, why = "the runtime event log", ""
			}
			r.add(res.Name, Fail, "%s is not pinned, so its known events can only be checked in %s, and there is none%s", reg, log, why)
			continue
		}
		r.add(res.Name, res.Status, "%s", res.Reason)
	}
	return r.finish()
}

// ParseQuote opens raw quote bytes once (go-tdx-guest abi, through
// quote.Parse) and reads its measurement registers. Verify, Explain and
// record read quotes only through it.
func ParseQuote(raw []byte) (*pb.QuoteV4, explain.Quote, error) {
	if len(raw) == 0 {
		return nil, explain.Quote{}, errors.New("no quote supplied")
	}
	q, err := quote.Parse(raw)
	if err != nil {
		return nil, explain.Quote{}, err
	}
	regs, err := quoteRegisters(q)
	if err != nil {
		return nil, explain.Quote{}, err
	}
	return q, regs, nil
}

// quoteRegisters returns MRTD and RTMR0..3 of a quote.
func quoteRegisters(q *pb.QuoteV4) (explain.Quote, error) {
	var out explain.Quote
	b := q.GetTdQuoteBody()
	if len(b.GetMrTd()) != 48 || len(b.GetRtmrs()) != 4 {
		return out, errors.New("quote body lacks MRTD or RTMR0..3")
	}
	copy(out[register.MRTD][:], b.GetMrTd())
	for i, v := range b.GetRtmrs() {
		reg := register.RTMRs[i]
		if len(v) != register.Size {
			return out, fmt.Errorf("quote %s is %d bytes", reg, len(v))
		}
		copy(out[reg][:], v)
	}
	return out, nil
}

// chainCerts returns the PCK, intermediate and root certificates in the quote.
func chainCerts(q *pb.QuoteV4) ([]*x509.Certificate, error) {
	rest := q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	var certs []*x509.Certificate
	for len(certs) < 3 {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PCK certificate chain: %v", err)
		}
		certs = append(certs, c)
	}
	if len(certs) != 3 {
		return nil, fmt.Errorf("PCK certificate chain has %d certificates, want 3 (PCK, intermediate, root)", len(certs))
	}
	return certs, nil
}

// authenticate runs go-tdx-guest's verification against Intel's root (with
// collateral) or, for simulated quotes, against the simulator roots. It
// reports whether verification must stop.
func (r *Report) authenticate(q *pb.QuoteV4, opts Options, now time.Time) bool {
	certs, err := chainCerts(q)
	if err != nil {
		r.add(CheckAuthenticity, Fail, "%v", err)
		return true
	}
	root := certs[2]
	intel := bytes.Equal(root.RawSubjectPublicKeyInfo, collateral.IntelRoot().RawSubjectPublicKeyInfo)
	if !intel {
		simulated := false
		if opts.SimRoots != nil {
			_, err := root.Verify(x509.VerifyOptions{Roots: opts.SimRoots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			simulated = err == nil
		}
		switch {
		case simulated && !opts.AllowSimulated:
			r.addCause(CheckAuthenticity, Fail, ErrSimulated, "%v", ErrSimulated)
			return true
		case !simulated && opts.SimRoots != nil:
			r.add(CheckAuthenticity, Fail, "the PCK chain root %q is neither Intel's SGX Root CA nor the given simulator root", root.Subject.CommonName)
			return true
		case !simulated:
			r.addCause(CheckAuthenticity, Fail, ErrUnknownRoot, "%v", ErrUnknownRoot)
			return true
		}
		if err := gverify.TdxQuote(q, &gverify.Options{TrustedRoots: opts.SimRoots, Now: now}); err != nil {
			r.add(CheckAuthenticity, Fail, "simulated quote does not verify against the simulator root: %v", err)
			return true
		}
		// Against adds the simulated-platform check, which depends on
		// the reference image.
		r.Simulated = true
		r.add(CheckAuthenticity, Pass, "signature chain verifies to the simulator root (SIMULATED: no TDX hardware)")
		r.add(CheckTCB, Skipped, "a simulated platform has no Intel TCB")
		return false
	}

	getter := opts.Getter
	if getter == nil {
		getter = collateral.NewOnline()
	}
	err = gverify.TdxQuote(q, &gverify.Options{GetCollateral: true, CheckRevocations: true, Getter: getter, Now: now, TrustedRoots: collateral.IntelRoots()})
	// An online getter (collateral.Online, or a collateral.Cache view)
	// remembers a network failure: no verdict on the evidence then.
	if f, ok := getter.(collateral.FailureReporter); ok && f.Failure() != nil {
		r.ErrorKind = ErrNetwork
		r.addCause(CheckAuthenticity, Fail, f.Failure(), "%v", f.Failure())
		return true
	}
	var missing error
	if b, ok := getter.(*collateral.Bundle); ok && b.Missing() != nil {
		missing = b.Missing()
	}
	switch {
	case err == nil:
		r.add(CheckAuthenticity, Pass, "PCK chain to Intel SGX Root CA, CRLs, quote and QE report signatures verified")
		r.add(CheckTCB, Pass, "TCB info and QE identity signed by Intel and current; platform TCB UpToDate")
		return false
	case tcbFailure(err):
		// go-tdx-guest checks the TD quote body against the TCB info only
		// after the chain, collateral signatures and quote signatures passed.
		r.add(CheckAuthenticity, Pass, "PCK chain to Intel SGX Root CA, CRLs, collateral signatures, quote and QE report signatures verified")
		r.add(CheckTCB, Fail, "%v", err)
		return false
	default:
		r.addCause(CheckAuthenticity, Fail, missing, "%v", err)
		return true
	}
}

// tcbFailure reports whether a go-tdx-guest (v0.3.1) verification error
// comes from comparing the verified quote with Intel's TCB info or QE
// identity, the last step of verification.
func tcbFailure(err error) bool {
	s := err.Error()
	return strings.Contains(s, "TCB status check") || strings.Contains(s, "Intel PCS's reported")
}

// binding checks REPORTDATA against the nonce and TLS key.
func (r *Report) binding(got []byte, claimed *attestation.ReportDataInfo, opts Options) {
	if opts.Nonce == nil {
		r.add(CheckBinding, Skipped, "no nonce and TLS key given: freshness and channel binding not checked")
		return
	}
	want, err := attestation.ReportData(opts.Nonce, *opts.SPKIHash)
	if err != nil {
		r.add(CheckBinding, Fail, "bad nonce: %v", err)
		return
	}
	if bytes.Equal(got, want[:]) {
		r.add(CheckBinding, Pass, "REPORTDATA = SHA-512(domain || our nonce || SHA-256(TLS SPKI %s…))", hex.EncodeToString(opts.SPKIHash[:])[:16])
		return
	}
	reason := "REPORTDATA does not bind our nonce and the TLS key we connected to"
	if claimed != nil {
		switch {
		case !strings.EqualFold(claimed.Nonce, hex.EncodeToString(opts.Nonce)):
			reason += fmt.Sprintf(": the evidence answers nonce %s, not ours (a replayed attestation)", claimed.Nonce)
		case !strings.EqualFold(claimed.SPKIHash, hex.EncodeToString(opts.SPKIHash[:])):
			reason += fmt.Sprintf(": the quote is bound to TLS key %s…, not the key we connected to %s… (man in the middle)", prefix(claimed.SPKIHash), hex.EncodeToString(opts.SPKIHash[:8]))
		default:
			reason += ": stale or forged quote"
		}
	}
	r.add(CheckBinding, Fail, "%s", reason)
}

func prefix(s string) string {
	if len(s) > 16 {
		return s[:16]
	}
	return s
}

// policy validates the TD fields of the quote body other than the registers
// (which explain compares) against the reference with go-tdx-guest
// validate, one check per field.
func (r *Report) policy(q *pb.QuoteV4, opts Options) error {
	ref := opts.Reference
	td := ref.TD
	v, err := td.Values()
	if err != nil {
		return err
	}
	attrs, xfam, minSVN, mrseam := v.Attributes, v.XFAM, v.MinTEETCBSVN, v.MRSEAM
	run := func(name string, o validate.TdQuoteBodyOptions, passReason string) {
		if err := validate.TdxQuote(q, &validate.Options{TdQuoteBodyOptions: o}); err != nil {
			r.add(name, Fail, "%v", err)
			return
		}
		r.add(name, Pass, "%s", passReason)
	}
	// TD attributes: DEBUG first, then the exact expected value.
	got := q.GetTdQuoteBody().GetTdAttributes()
	debug := DebugSet(got)
	switch {
	case debug && !opts.AllowDebug:
		r.addCause(CheckDebug, Fail, ErrDebug, "%v (%s): the host can read and change its memory", ErrDebug, hex.EncodeToString(got))
	case attrs != nil:
		run(CheckDebug, validate.TdQuoteBodyOptions{TdAttributes: attrs}, "equal to the reference "+td.Attributes+debugNote(debug))
	default:
		run(CheckDebug, validate.TdQuoteBodyOptions{}, "within the allowed TDX attribute bits (no reference value)"+debugNote(debug))
	}
	if xfam != nil {
		run(CheckXFAM, validate.TdQuoteBodyOptions{Xfam: xfam}, "equal to the reference "+td.XFAM)
	} else {
		r.add(CheckXFAM, Skipped, "the reference gives no XFAM")
	}
	if minSVN != nil {
		run(CheckTCBSVN, validate.TdQuoteBodyOptions{MinimumTeeTcbSvn: minSVN}, "at least "+td.MinTEETCBSVN)
	} else {
		r.add(CheckTCBSVN, Skipped, "the reference sets no minimum")
	}
	if mrseam != nil {
		run(CheckMRSEAM, validate.TdQuoteBodyOptions{MrSeam: mrseam}, "equal to the reference")
	} else {
		r.add(CheckMRSEAM, Skipped, "the reference pins no TDX module")
	}
	// Owner fields: set by whoever launches the TD (the host, unless an
	// owner pins them), so all zero unless the reference pins them.
	body := q.GetTdQuoteBody()
	for _, f := range []struct {
		name      string
		got, want []byte
		pinned    bool
	}{
		{CheckMRConfigID, body.GetMrConfigId(), v.MRConfigID, td.MRConfigID != ""},
		{CheckMROwner, body.GetMrOwner(), v.MROwner, td.MROwner != ""},
		{CheckMROwnerCfg, body.GetMrOwnerConfig(), v.MROwnerConfig, td.MROwnerConfig != ""},
	} {
		what := "all zero, as the reference expects (it pins no owner value)"
		if f.pinned {
			what = "equal to the reference " + explain.Abbrev(hex.EncodeToString(f.want))
		}
		if bytes.Equal(f.got, f.want) {
			r.add(f.name, Pass, "%s", what)
			continue
		}
		expect := hex.EncodeToString(f.want)
		if !f.pinned {
			expect += " (all zero: the reference pins no owner value)"
		}
		r.add(f.name, Fail, "the quote's %s is %s, the reference expects %s", f.name, hex.EncodeToString(f.got), expect)
	}
	return nil
}

func debugNote(debug bool) string {
	if debug {
		return " (DEBUG set, allowed by the options)"
	}
	return ", DEBUG clear"
}
