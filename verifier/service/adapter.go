package service

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/google/go-tdx-guest/verify/trust"

	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/verifier/verify"
)

// policy is what an appraisal needs besides the evidence and reference.
type policy struct {
	allowSimulated bool
	simRoots       *x509.CertPool
	getter         trust.HTTPSGetter
	now            time.Time
	nonce          []byte
	spkiHash       [32]byte
	acceptUnpinned []register.Register
}

// options are the verify.Options of p with reference ref (nil: none yet).
// (Keep this the only place that fills verify.Options, so that changes to
// them land here.)
func (p policy) options(ref *refDoc) verify.Options {
	var spki *[32]byte
	if p.nonce != nil { // nil: the caller checked REPORTDATA (key broker)
		h := p.spkiHash
		spki = &h
	}
	opts := verify.Options{
		AllowSimulated: p.allowSimulated,
		SimRoots:       p.simRoots,
		Getter:         p.getter,
		Now:            p.now,
		Nonce:          p.nonce,
		SPKIHash:       spki,
		AcceptUnpinned: p.acceptUnpinned,
	}
	if ref != nil {
		chk := ref.check
		opts.Reference, opts.ReferenceCheck = ref.doc, &chk
	}
	return opts
}

// checkQuote checks the evidence's quote once for all reference
// documents: format, authenticity, TCB and REPORTDATA binding.
func checkQuote(ctx context.Context, ev verify.Evidence, p policy) *verify.CheckedQuote {
	return verify.CheckQuote(ctx, ev, p.options(nil))
}

// appraise is the checked evidence against one reference document.
func appraise(cq *verify.CheckedQuote, ref *refDoc, p policy) *verify.Report {
	return cq.Against(p.options(ref))
}

// quoteFields opens a quote as verify does and returns its REPORTDATA and
// registers ("mrtd", "rtmr0".. to hex).
func quoteFields(raw []byte) (reportData []byte, regs map[string][]byte, err error) {
	q, rq, err := verify.ParseQuote(raw)
	if err != nil {
		return nil, nil, err
	}
	regs = map[string][]byte{}
	for r := register.MRTD; r <= register.RTMR3; r++ {
		v := rq[r]
		regs[r.Key()] = v[:]
	}
	return q.GetTdQuoteBody().GetReportData(), regs, nil
}
