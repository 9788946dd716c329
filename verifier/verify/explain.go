package verify

import (
	"fmt"

	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/verifier/explain"
)

// Explain compares a quote's registers and logs with ref without checking
// the quote's signature.
func Explain(ev Evidence, ref *refvalues.Document) (*explain.Analysis, error) {
	_, regs, err := ParseQuote(ev.Quote)
	if err != nil {
		return nil, fmt.Errorf("quote: %w", err)
	}
	return explain.Analyze(ref, regs, ev.CCEL, ev.CCELTable, ev.RuntimeLog), nil
}
