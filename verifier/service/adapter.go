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

// appraise is the service's one call into package verify: the evidence
// against one reference document. (Keep it the only one, so that changes
// to verify.Options land here.)
func appraise(ctx context.Context, ev verify.Evidence, ref *refDoc, p policy) *verify.Report {
	chk := ref.check
	var spki *[32]byte
	if p.nonce != nil { // nil: the caller checked REPORTDATA (key broker)
		h := p.spkiHash
		spki = &h
	}
	return verify.Verify(ctx, ev, verify.Options{
		Reference:      ref.doc,
		ReferenceCheck: &chk,
		AllowSimulated: p.allowSimulated,
		SimRoots:       p.simRoots,
		Getter:         p.getter,
		Now:            p.now,
		Nonce:          p.nonce,
		SPKIHash:       spki,
		AcceptUnpinned: p.acceptUnpinned,
	})
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
