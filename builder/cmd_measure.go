package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/tdforge/tdforge/internal/tdx/measure"
	"github.com/tdforge/tdforge/internal/tdx/platform"
)

// measureManifest implements `builder measure <manifest>` (manifest mode).
// It is set by the manifest build code; raw mode (--firmware) lives here.
var measureManifest func(ctx context.Context, args []string) int

func init() {
	register(&command{
		name:    "measure",
		summary: "compute MRTD and RTMR0..3 (raw: --firmware F [--kernel K --initrd I ...]; or a manifest)",
		run:     runMeasure,
	})
}

// hasFlag reports whether args set the named flag in any of Go's spellings.
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

func runMeasure(ctx context.Context, args []string) int {
	if !hasFlag(args, "firmware") {
		if hasFlag(args, "h") || hasFlag(args, "help") {
			return runMeasureRaw(os.Stdout, os.Stderr, args)
		}
		if measureManifest == nil {
			fmt.Fprintln(os.Stderr, "builder measure: manifest mode not available; use raw mode: builder measure --firmware OVMF.fd [--kernel K --initrd I --cmdline C --memory 2G --cpus 2 --platform P]")
			return exitUsage
		}
		return measureManifest(ctx, args)
	}
	return runMeasureRaw(os.Stdout, os.Stderr, args)
}

// runMeasureRaw is raw mode: measure the given files for a platform.
func runMeasureRaw(stdout, stderr io.Writer, args []string) int {
	fs := flag.NewFlagSet("measure", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fw := fs.String("firmware", "", "unified TDVF firmware image (OVMF.fd)")
	kernel := fs.String("kernel", "", "bzImage (EFI stub)")
	initrd := fs.String("initrd", "", "initrd")
	cmdline := fs.String("cmdline", "", "kernel command line (QEMU -append)")
	memory := fs.String("memory", "2G", "guest memory, e.g. 2G or 2048M")
	cpus := fs.Int("cpus", 2, "guest vCPUs")
	plat := fs.String("platform", platform.DefaultName, "platform profile (see builder platforms)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	explain := fs.Bool("explain", false, "print the events behind each register")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: builder measure --firmware F [--kernel K --initrd I --cmdline C --memory 2G --cpus 2 --platform P] [--json] [--explain]\n       builder measure [manifest flags] MANIFEST   (manifest mode)\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "builder measure: unexpected argument %q in raw mode (a manifest cannot be combined with --firmware)\n", fs.Arg(0))
		return exitUsage
	}
	if *fw == "" {
		fmt.Fprintln(stderr, "builder measure: --firmware is empty")
		return exitUsage
	}
	mem, err := parseMeasureMemory(*memory)
	if err != nil {
		fmt.Fprintf(stderr, "builder measure: --memory: %v\n", err)
		return exitUsage
	}
	if *cpus < 1 {
		fmt.Fprintln(stderr, "builder measure: --cpus must be at least 1")
		return exitUsage
	}
	prof, err := platform.Lookup(*plat)
	if err != nil {
		fmt.Fprintf(stderr, "builder measure: --platform: %v\n", err)
		return exitUsage
	}
	in := measure.Inputs{Cmdline: *cmdline, MemoryMB: mem, CPUs: *cpus, Profile: prof}
	for _, f := range []struct {
		flag, path string
		dst        *[]byte
	}{{"firmware", *fw, &in.Firmware}, {"kernel", *kernel, &in.Kernel}, {"initrd", *initrd, &in.Initrd}} {
		if f.path == "" {
			continue
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			fmt.Fprintf(stderr, "builder measure: --%s: %v\n", f.flag, err)
			return exitFail
		}
		*f.dst = b
	}
	r, err := measure.Compute(in)
	if err != nil {
		fmt.Fprintf(stderr, "builder measure: %v\n", err)
		return exitFail
	}
	if *asJSON {
		b, err := r.JSON()
		if err != nil {
			fmt.Fprintf(stderr, "builder measure: %v\n", err)
			return exitFail
		}
		stdout.Write(b)
		return exitOK
	}
	printMeasure(stdout, r, prof, *explain)
	return exitOK
}

func parseMeasureMemory(s string) (int, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := 1
	switch {
	case strings.HasSuffix(t, "G"):
		mult, t = 1024, strings.TrimSuffix(t, "G")
	case strings.HasSuffix(t, "M"):
		t = strings.TrimSuffix(t, "M")
	}
	n, err := strconv.Atoi(t)
	if err != nil || n <= 0 || n > 1<<22 {
		return 0, fmt.Errorf("%q: want a size like 2G or 2048M", s)
	}
	return n * mult, nil
}

func printMeasure(w io.Writer, r *measure.Result, p *platform.Profile, explain bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "platform\t%s (QEMU %s, OVMF %s)\n", p.Name, p.QEMUVersion, p.OVMFBuild)
	fmt.Fprintf(tw, "rules\t%s\n", p.Rules())
	for _, n := range []string{"mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"} {
		if v := r.Register(n); v != nil {
			fmt.Fprintf(tw, "%s\t%x\n", strings.ToUpper(n), v[:])
		} else {
			fmt.Fprintf(tw, "%s\tunknown: %s\n", strings.ToUpper(n), r.Reasons[n])
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(tw, "note\t%s\n", n)
	}
	tw.Flush()
	if !explain {
		return
	}
	for _, n := range []string{"rtmr0", "rtmr1", "rtmr2", "rtmr3"} {
		fmt.Fprintf(w, "\n%s events:\n", strings.ToUpper(n))
		if len(r.Events[n]) == 0 {
			fmt.Fprintln(w, "  (none)")
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for i, e := range r.Events[n] {
			d := e.Digest
			if d == "" {
				d = "unknown"
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\n", i, e.Type, e.Component, e.Description, d)
		}
		tw.Flush()
	}
}
