package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/image/diff"
)

func runDiff(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("diff", flag.ContinueOnError)
	fset.SetOutput(stderr)
	asJSON := fset.Bool("json", false, "print the comparison as JSON")
	fset.Usage = func() {
		fmt.Fprintf(stderr, `Usage: builder diff [--json] A B

Compares two 'builder build -o DIR' outputs: every regular file is same,
different or missing. A differing initrd is compared entry by entry; a
differing disk.raw by GPT, partition regions (filesystem or verity hash area,
from payloads.json) and, when fsck.erofs is installed, by file.
Exit status: 0 identical, 1 different (or an error), 2 usage.
`)
		fset.PrintDefaults()
	}
	if err := fset.Parse(args); err != nil {
		return cli.ExitUsage
	}
	if fset.NArg() != 2 {
		fset.Usage()
		return cli.ExitUsage
	}
	rep, err := diff.Dirs(ctx, fset.Arg(0), fset.Arg(1))
	if err != nil {
		fmt.Fprintf(stderr, "builder diff: %v\n", err)
		return cli.ExitFail
	}
	if *asJSON {
		rep.WriteJSON(stdout)
	} else {
		rep.WriteText(stdout)
	}
	if rep.Identical {
		return cli.ExitOK
	}
	return cli.ExitFail
}
