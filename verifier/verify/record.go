package verify

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/tdforge/tdforge/internal/tdx/quote"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"

	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/verifier/explain"
)

// Record pins a reference-values document (Source "recorded") to the
// registers and TD attributes of a known-good quote. When logs are given
// they must replay to the quote, and their events become the document's
// expected events. The quote's signature is not checked here: the operator
// vouches for it.
func Record(ev Evidence, img refvalues.Image) (*refvalues.Document, error) {
	anyQ, err := quote.Parse(ev.Quote)
	if err != nil {
		return nil, fmt.Errorf("quote: not a TDX quote v4: %v", err)
	}
	q, ok := anyQ.(*pb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("quote: unsupported type %T", anyQ)
	}
	if err := abi.CheckQuoteV4(q); err != nil {
		return nil, fmt.Errorf("quote: %v", err)
	}
	regs, err := QuoteRegisters(q)
	if err != nil {
		return nil, fmt.Errorf("quote: %v", err)
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
			DebugAllowed: binary.LittleEndian.Uint64(attrs)&attrDebug != 0,
			MinTEETCBSVN: hex.EncodeToString(body.GetTeeTcbSvn()),
			MRSEAM:       hex.EncodeToString(body.GetMrSeam()),
		},
		Source: "recorded",
	}
	for i, n := range refvalues.RegisterNames {
		doc.Registers.Set(n, regs[i][:])
	}
	add := func(evs []explain.LogEvent) {
		for _, e := range evs {
			comp := ""
			if e.Register == "rtmr3" {
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
		evs, err := explain.ReplayRuntime(ev.RuntimeLog, regs[4])
		if err != nil {
			return nil, fmt.Errorf("refusing to record: %w", err)
		}
		add(evs)
	}
	return doc, nil
}

// Explain compares a quote's registers and logs with ref without checking
// the quote's signature.
func Explain(ev Evidence, ref *refvalues.Document) (*explain.Analysis, error) {
	anyQ, err := quote.Parse(ev.Quote)
	if err != nil {
		return nil, fmt.Errorf("quote: not a TDX quote v4: %v", err)
	}
	q, ok := anyQ.(*pb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("quote: unsupported type %T", anyQ)
	}
	regs, err := QuoteRegisters(q)
	if err != nil {
		return nil, fmt.Errorf("quote: %v", err)
	}
	return explain.Analyze(ref, regs, ev.CCEL, ev.CCELTable, ev.RuntimeLog), nil
}
