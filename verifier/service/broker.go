package service

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/veraison/ear"

	"github.com/tdforge/tdforge/verifier/broker"
	"github.com/tdforge/tdforge/verifier/result"
	"github.com/tdforge/tdforge/verifier/verify"
)

// appraiseRCAR is the key broker's appraisal: the evidence against every
// reference document, as for POST /v1/attest, except that the broker has
// checked REPORTDATA itself (it binds the RCAR runtime-data, not a TLS
// key). A release needs a trusted, unrevoked match.
func (s *Service) appraiseRCAR(ctx context.Context, ev verify.Evidence, nonce []byte, binding string) (*broker.Appraisal, error) {
	start := time.Now()
	a := &appraisal{ev: ev, fieldQuote: "tee-evidence.primary_evidence.quote"}
	now := s.now()
	r, ref, e := s.match(ctx, a, policy{allowSimulated: s.cfg.AllowSimulated, simRoots: s.cfg.SimRoots, getter: s.getter(), now: now, acceptUnpinned: s.cfg.AcceptUnpinned})
	if e != nil {
		return nil, &broker.Refusal{Status: e.status, Reason: e.Error()}
	}
	for i, c := range r.Checks {
		if c.Name == verify.CheckBinding && c.Status == verify.Skipped {
			r.Checks[i] = verify.Check{Name: verify.CheckBinding, Status: verify.Pass, Reason: binding}
		}
	}
	switch r.ErrorKind {
	case verify.ErrNetwork:
		return nil, &broker.Refusal{Status: http.StatusServiceUnavailable, Reason: "Intel PCS collateral could not be fetched: " + reason(r, verify.CheckAuthenticity) + "; try again later"}
	case verify.ErrInput:
		return nil, &broker.Refusal{Status: http.StatusBadRequest, Reason: "unusable evidence: " + firstFailure(r)}
	}
	for _, c := range r.Checks {
		if c.Name == verify.CheckAuthenticity && errors.Is(c.Cause, verify.ErrSimulated) {
			return nil, &broker.Refusal{Status: http.StatusForbidden, Reason: "a simulated quote (signed by the simulator root): this service runs without --allow-simulated"}
		}
	}
	out := &broker.Appraisal{Trusted: r.Trusted, Reason: firstFailure(r)}
	if ref != nil {
		out.PolicyID = ref.id
		out.Image, out.Version, out.Dev = ref.doc.Image.Name, ref.doc.Image.Version, ref.doc.Image.Dev
	}
	switch {
	case r.Trusted && len(r.Unpinned) > 0:
		// --accept-unpinned lets /v1/attest answer warning; a key is
		// released only when every register matches the reference.
		out.Trusted = false
		out.Reason = fmt.Sprintf("%s: keys are released only to a TD whose every register is pinned by %s; pin them with `verifier record` and `verifier reference merge`", r.Headline(), out.PolicyID)
	case r.Trusted:
		out.Reason = fmt.Sprintf("%s: the evidence matches %s", r.Verdict, out.PolicyID)
	}
	in := result.Input{Nonce: nonce, PolicyID: out.PolicyID, VerifierBuild: s.cfg.VerifierBuild, Registers: map[string]string{}}
	if rd, regs, err := quoteFields(ev.Quote); err == nil {
		in.ReportData = hex.EncodeToString(rd)
		for k, v := range regs {
			in.Registers[k] = hex.EncodeToString(v)
		}
	}
	ar, err := result.New(r, in, now)
	if err == nil {
		var tok []byte
		tok, _, err = s.cfg.Keys.Sign(ar)
		out.Token = string(tok)
	}
	if err != nil {
		return nil, fmt.Errorf("signing the result: %v", err)
	}
	s.metrics.appraisals.WithLabelValues(ear.TrustTierToString[result.Status(r)]).Inc()
	s.metrics.latency.Observe(time.Since(start).Seconds())
	return out, nil
}
