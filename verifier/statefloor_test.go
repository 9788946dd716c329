package main

import (
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/tdx/attestation"
)

func TestStateFloor(t *testing.T) {
	gen := func(g uint64) *uint64 { return &g }
	for _, tc := range []struct {
		name    string
		r       *attestation.Response
		floor   uint64
		problem string // "" = passes
		line    string
	}{
		{"no floor, no volume", &attestation.Response{}, 0, "", ""},
		{"no floor", &attestation.Response{State: "mounted", StateGeneration: gen(7)}, 0, "", "pass --state-floor 7 next time"},
		{"at floor", &attestation.Response{State: "mounted", StateGeneration: gen(7)}, 7, "", "floor 7: ok"},
		{"above floor", &attestation.Response{State: "mounted", StateGeneration: gen(9)}, 7, "", "pass --state-floor 9 next time"},
		{"rollback", &attestation.Response{State: "mounted", StateGeneration: gen(6)}, 7, "ROLLBACK: state generation 6 is below the floor 7", "ROLLBACK"},
		{"locked", &attestation.Response{State: "locked (the key broker refused this TD)"}, 7, "no generation: its state volume is locked (the key broker refused this TD)", "State:   locked"},
		{"no volume", &attestation.Response{}, 3, "reports no state volume", "reports no state volume"},
	} {
		c := checkState(tc.r, tc.floor)
		if (tc.problem == "") != (c.Problem == "") || !strings.Contains(c.Problem, tc.problem) {
			t.Errorf("%s: problem %q, want %q", tc.name, c.Problem, tc.problem)
		}
		if l := c.line(); (tc.line == "") != (l == "") || !strings.Contains(l, tc.line) {
			t.Errorf("%s: line %q, want it to contain %q", tc.name, l, tc.line)
		}
		want := cli.ExitOK
		if tc.problem != "" {
			want = cli.ExitFail
		}
		if got := stateCode(cli.ExitOK, c); got != want {
			t.Errorf("%s: exit %d, want %d", tc.name, got, want)
		}
		if got := stateCode(cli.ExitNetwork, c); got != cli.ExitNetwork {
			t.Errorf("%s: a worse exit code was replaced by %d", tc.name, got)
		}
	}
}
