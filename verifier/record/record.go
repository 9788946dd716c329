// Package record is the verifier's inverse: it turns the evidence of a
// known-good TD into a reference-values document (Source "recorded").
package record

import (
	"bytes"
	"encoding/hex"
	"fmt"

	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/verifier/explain"
	"github.com/tdforge/tdforge/verifier/verify"
)

// Reference pins a reference-values document to the registers and TD
// attributes of a known-good quote. When logs are given they must replay
// to the quote, and their events become the document's expected events.
// The quote's signature is not checked here: the operator vouches for it.
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
