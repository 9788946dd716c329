package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/tdforge/tdforge/internal/image/diff"
)

func init() {
	register(&command{name: "diff", summary: "compare two build output directories artifact by artifact", run: runDiff})
}

func runDiff(ctx context.Context, args []string) int {
	fset := flag.NewFlagSet("diff", flag.ContinueOnError)
	asJSON := fset.Bool("json", false, "print the comparison as JSON")
	fset.Usage = func() {
		fmt.Fprintf(os.Stderr, `Usage: builder diff [--json] A B

Compares two 'builder build -o DIR' outputs: every regular file is same,
different or missing. A differing initrd is compared entry by entry; a
differing disk.raw by GPT, partition regions (filesystem or verity hash area,
from payloads.json) and, when fsck.erofs is installed, by file.
Exit status: 0 identical, 1 different (or an error), 2 usage.
`)
		fset.PrintDefaults()
	}
	if err := fset.Parse(args); err != nil {
		return exitUsage
	}
	if fset.NArg() != 2 {
		fset.Usage()
		return exitUsage
	}
	rep, err := diff.Dirs(ctx, fset.Arg(0), fset.Arg(1))
	if err != nil {
		fmt.Fprintf(os.Stderr, "builder diff: %v\n", err)
		return exitFail
	}
	if *asJSON {
		rep.WriteJSON(os.Stdout)
	} else {
		rep.WriteText(os.Stdout)
	}
	if rep.Identical {
		return exitOK
	}
	return exitFail
}
