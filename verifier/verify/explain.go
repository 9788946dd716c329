package verify

import (
	"fmt"
	"slices"

	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
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

// SplitUnpinned returns the keys of the registers a's reference leaves
// unpinned, split into those not accepted and those in accept.
func SplitUnpinned(a *explain.Analysis, accept []register.Register) (unpinned, accepted []string) {
	for _, st := range a.Registers {
		if !st.Unpinned() {
			continue
		}
		reg, err := register.Parse(st.Name)
		if err == nil && slices.Contains(accept, reg) {
			accepted = append(accepted, st.Name)
		} else {
			unpinned = append(unpinned, st.Name)
		}
	}
	return unpinned, accepted
}
