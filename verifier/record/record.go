// Package record is the verifier's inverse: it turns the evidence of a
// known-good TD into a reference-values document (Source "recorded").
package record

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/verifier/explain"
	"github.com/tdforge/tdforge/verifier/verify"
)

// Reference pins a reference-values document to the registers and TD
// attributes of a known-good quote. When logs are given they must replay
// to the quote, and their events become the document's expected events.
// The quote's signature is not checked here: call Authenticate before the
// document is written or trusted.
func Reference(ev verify.Evidence, img refvalues.Image) (*refvalues.Document, error) {
	q, regs, err := verify.ParseQuote(ev.Quote)
	if err != nil {
		return nil, fmt.Errorf("quote: %w", err)
	}
	body := q.GetTdQuoteBody()
	attrs := body.GetTdAttributes()
	doc := &refvalues.Document{
		Schema:    refvalues.Schema,
		Image:     img,
		Inputs:    []refvalues.Digest{},
		Artifacts: []refvalues.Digest{},
		Payloads:  []refvalues.Payload{},
		Events:    map[string][]refvalues.Event{},
		TD: refvalues.TD{
			Attributes:   hex.EncodeToString(attrs),
			XFAM:         hex.EncodeToString(body.GetXfam()),
			DebugAllowed: verify.DebugSet(attrs),
			MinTEETCBSVN: hex.EncodeToString(body.GetTeeTcbSvn()),
			MRSEAM:       hex.EncodeToString(body.GetMrSeam()),
		},
		Source: "recorded",
	}
	// Owner fields are pinned as recorded when set (all zero is the
	// verifier's default).
	for _, f := range []struct {
		v   []byte
		dst *string
	}{{body.GetMrConfigId(), &doc.TD.MRConfigID}, {body.GetMrOwner(), &doc.TD.MROwner}, {body.GetMrOwnerConfig(), &doc.TD.MROwnerConfig}} {
		if !bytes.Equal(f.v, make([]byte, len(f.v))) {
			*f.dst = hex.EncodeToString(f.v)
		}
	}
	for _, reg := range register.All {
		doc.Registers.Set(reg, regs[reg][:])
	}
	add := func(evs []explain.LogEvent) {
		for _, e := range evs {
			comp := ""
			if e.Register == register.RTMR3.Key() {
				comp = e.Description
			}
			doc.Events[e.Register] = append(doc.Events[e.Register], refvalues.Event{
				Type: e.Type, Description: e.Description, Digest: e.Digest, Component: comp, Content: e.Content,
			})
		}
	}
	if len(ev.CCEL) > 0 {
		evs, err := explain.ReplayCCEL(ev.CCELTable, ev.CCEL, regs)
		if err != nil {
			return nil, fmt.Errorf("refusing to record: %w", err)
		}
		add(evs)
	}
	if len(ev.RuntimeLog) > 0 {
		evs, err := explain.ReplayRuntime(ev.RuntimeLog, regs[register.RTMR3])
		if err != nil {
			return nil, fmt.Errorf("refusing to record: %w", err)
		}
		add(evs)
	}
	return doc, nil
}

// Authenticate checks that the quote of ev, from which doc was recorded,
// is authentic: it verifies ev against doc (so the simulated-platform
// check reads doc's image flags) under opts' trust anchors, collateral and
// time, and, when opts carries a nonce and TLS key, that REPORTDATA binds
// them. It returns the report, and an error unless the quote parsed, its
// signature chain verified (to Intel's root, or to a simulator root that
// opts allows), and neither the simulated-platform check nor the binding
// check failed. A TCB that is not up to date does not refuse: the document
// does not pin the TCB status, and each appraisal checks it again.
func Authenticate(ctx context.Context, ev verify.Evidence, doc *refvalues.Document, opts verify.Options) (*verify.Report, error) {
	opts.Reference = doc
	opts.ReferenceCheck = nil
	opts.AcceptUnpinned = nil
	r := verify.Verify(ctx, ev, opts)
	for _, name := range []string{verify.CheckFormat, verify.CheckAuthenticity, verify.CheckSimulated, verify.CheckBinding} {
		for _, c := range r.Checks {
			if c.Name == name && c.Status == verify.Fail {
				err := fmt.Errorf("refusing to record: %s: %s", c.Name, c.Reason)
				if c.Cause != nil {
					err = &refused{err: err, cause: c.Cause}
				}
				return r, err
			}
		}
	}
	for _, c := range r.Checks {
		if c.Name == verify.CheckAuthenticity && c.Status == verify.Pass {
			return r, nil
		}
	}
	return r, errors.New("refusing to record: the quote's authenticity was not established")
}

// refused is Authenticate's error with the failed check's cause, so
// callers can match it (errors.Is) and hint at the flag that helps.
type refused struct {
	err   error
	cause error
}

func (e *refused) Error() string { return e.err.Error() }
func (e *refused) Unwrap() error { return e.cause }
