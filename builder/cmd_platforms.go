package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/tdforge/tdforge/internal/canonjson"
	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/tdx/platform"
)

func runPlatforms(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("platforms", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the profiles as JSON")
	if code, ok := cli.ParseArgs(fs, args, -1); !ok {
		return code
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "builder platforms: unexpected argument %q\n", fs.Arg(0))
		return cli.ExitUsage
	}
	list := platform.List()
	if *asJSON {
		if err := canonjson.Encode(stdout, list); err != nil {
			fmt.Fprintf(stderr, "builder platforms: %v\n", err)
			return cli.ExitFail
		}
		return cli.ExitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tQEMU\tOVMF\tVM\tRTMR0\tRULES")
	for _, p := range list {
		name := p.Name
		if p.Name == platform.DefaultName {
			name += " (default)"
		}
		if p.Simulated {
			name += " (simulated)"
		}
		r0 := "predicted"
		if p.ACPI == nil || p.BootVariables == nil {
			r0 = "unknown (ACPI/boot variables not pinned)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d CPUs, %d MiB\t%s\t%s\n", name, p.QEMUVersion, p.OVMFBuild, p.VM.CPUs, p.VM.MemoryMB, r0, p.Rules())
	}
	tw.Flush()
	return cli.ExitOK
}
