package main

import (
	"fmt"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/tdx/attestation"
)

// stateCheck is the outcome of attest --state-floor: the agent's state
// volume and its generation (a count of committed writes) against the
// lowest generation the caller accepts. TDX has no monotonic counter, so
// the host can replay an older copy of the sealed volume; a generation
// below one seen before reveals such a rollback (docs/threat-model.md).
type stateCheck struct {
	State      string  `json:"state,omitempty"`
	Generation *uint64 `json:"generation,omitempty"`
	Floor      uint64  `json:"floor,omitempty"`
	// Problem is why the check failed; empty when it passed or no floor
	// was given.
	Problem string `json:"problem,omitempty"`
}

// checkState compares the evidence's state generation with floor (0: no
// check).
func checkState(r *attestation.Response, floor uint64) stateCheck {
	c := stateCheck{Floor: floor}
	if r != nil {
		c.State, c.Generation = r.State, r.StateGeneration
	}
	if floor == 0 {
		return c
	}
	switch {
	case c.Generation == nil && c.State == "":
		c.Problem = fmt.Sprintf("--state-floor %d: the agent reports no state volume (the image has none, or predates state generations)", floor)
	case c.Generation == nil:
		c.Problem = fmt.Sprintf("--state-floor %d: the agent reports no generation: its state volume is %s", floor, c.State)
	case *c.Generation < floor:
		c.Problem = fmt.Sprintf("ROLLBACK: state generation %d is below the floor %d: the host may have replayed an older copy of the sealed volume", *c.Generation, floor)
	}
	return c
}

// line renders the check for attest's text output ("" when there is
// nothing to say).
func (c stateCheck) line() string {
	if c.State == "" && c.Floor == 0 {
		return ""
	}
	s := "State:   " + c.State
	if c.Generation != nil {
		s += fmt.Sprintf(", generation %d", *c.Generation)
	}
	switch {
	case c.Problem != "":
		s += "\n" + c.Problem
	case c.Floor > 0:
		s += fmt.Sprintf(" (floor %d: ok; pass --state-floor %d next time)", c.Floor, *c.Generation)
	case c.Generation != nil:
		s += fmt.Sprintf(" (pass --state-floor %d next time to detect a rollback)", *c.Generation)
	}
	return s
}

// stateCode turns a passing exit code into a failure when the state check
// failed.
func stateCode(code int, c stateCheck) int {
	if c.Problem != "" && code == cli.ExitOK {
		return cli.ExitFail
	}
	return code
}
