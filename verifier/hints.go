package main

import (
	"errors"

	"github.com/tdforge/tdforge/verifier/collateral"
	"github.com/tdforge/tdforge/verifier/reference"
	"github.com/tdforge/tdforge/verifier/verify"
)

// checkHint is the command-line advice for the fact a check rests on
// (Check.Cause), or "". The libraries state facts; only the command knows
// its flags.
func checkHint(cause error) string {
	switch {
	case cause == nil:
		return ""
	case errors.Is(cause, verify.ErrSimulated):
		return "pass --allow-simulated to accept dev images"
	case errors.Is(cause, verify.ErrUnknownRoot):
		return "a simulated quote? for dev images pass --allow-simulated --sim-root FILE"
	case errors.Is(cause, verify.ErrDebug):
		return "pass --allow-debug only for development"
	case errors.Is(cause, verify.ErrHalfBinding):
		return "give both --nonce HEX and --spki-hash HEX"
	case errors.Is(cause, verify.ErrNoSimRoot):
		return "--allow-simulated needs --sim-root FILE"
	case errors.Is(cause, verify.ErrUnpinned):
		return "pin it (for RTMR0: `verifier record` on trusted hardware, then `verifier reference merge`), or pass --accept-unpinned REGISTER to accept it unchecked"
	case errors.Is(cause, reference.ErrNoKey):
		return "pass --reference-key PEM (the publisher's public key) to check its signature"
	case errors.Is(cause, reference.ErrUnsigned), errors.Is(cause, reference.ErrUnsignedRelease):
		return "sign the reference values with `builder sign` and pass the signed file with --reference-key PEM"
	case errors.As(cause, new(*collateral.NetworkError)):
		return "no network? use an offline bundle: `verifier collateral fetch -o DIR --quote FILE` on a connected machine, then --collateral DIR"
	case errors.As(cause, new(*collateral.MissingError)):
		return "fetch one for this quote with `verifier collateral fetch -o DIR --quote FILE`"
	}
	return ""
}

// addHints appends each check's hint to its reason, so people and the
// JSON report both read the flag that changes the outcome.
func addHints(r *verify.Report) {
	for i, c := range r.Checks {
		if h := checkHint(c.Cause); h != "" {
			r.Checks[i].Reason += "; " + h
		}
	}
}
