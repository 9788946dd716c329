package main

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/tdforge/tdforge/internal/build"
	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/inputs/fetch"
	"github.com/tdforge/tdforge/internal/inputs/lockfile"
)

// The libraries state facts; the command adds the flag that fixes them.
func TestFailAddsHints(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
		want string
	}{
		{fmt.Errorf("initramfs: %w", build.ErrNoRepoRoot), cli.ExitFail,
			"builder build: initramfs: cannot find the tdforge source tree to build initd and agent from\nbuilder build: hint: run builder inside the tdforge repository or pass -repo DIR\n"},
		{fmt.Errorf("%w: payload.webui", lockfile.ErrNotRecorded), cli.ExitFail,
			"builder build: input not recorded in the lock file: payload.webui\nbuilder build: hint: run 'builder build -update-lock' to record it\n"},
		{&lockfile.SyntaxError{File: "m.hcl.lock.hcl", Detail: "bad"}, cli.ExitFail,
			"builder build: lock file m.hcl.lock.hcl: bad\nbuilder build: hint: delete it and run 'builder build -update-lock' to recreate it\n"},
		{&imagedir.NotBuildError{Dir: "out", Err: errors.New("open out/build.json: no such file or directory")}, cli.ExitFail,
			"builder build: out is not a tdforge build output (no build.json): open out/build.json: no such file or directory\nbuilder build: hint: build one with 'builder build -o out MANIFEST'\n"},
		{&fetch.NetworkError{Source: "x", Err: errors.New("refused")}, cli.ExitNetwork, ""},
		{errors.New("plain"), cli.ExitFail, "builder build: plain\n"},
	} {
		var b bytes.Buffer
		code := fail(&b, "build", tc.err)
		if code != tc.code || (tc.want != "" && b.String() != tc.want) {
			t.Errorf("%v: exit %d (want %d), printed %q, want %q", tc.err, code, tc.code, b.String(), tc.want)
		}
	}
}
