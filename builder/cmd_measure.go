package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/tdforge/tdforge/internal/build"
	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/tdx/measure"
	"github.com/tdforge/tdforge/internal/tdx/platform"
	"github.com/tdforge/tdforge/internal/tdx/register"
)

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

func runMeasure(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if !hasFlag(args, "firmware") && !hasFlag(args, "h") && !hasFlag(args, "help") {
		return runMeasureManifest(ctx, args, stdout, stderr)
	}
	return runMeasureRaw(args, stdout, stderr)
}

// runMeasureManifest is `builder measure [flags] MANIFEST`: the registers of
// the image the manifest describes, computed by the build's own pipeline
// without publishing an image. Inputs that are missing here (variables
// without a value, failed downloads) are reported with the registers they
// leave unknown.
func runMeasureManifest(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("measure", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var pf pipelineFlags
	pf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON: mrtd, rtmr0..3 (null when unknown), reasons, platform, events")
	explain := fs.Bool("explain", false, "print the events behind each register")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: builder measure [--secrets DIR] [-var k=v]... [-var-file F]... [--json] [--explain] [--verbose] MANIFEST\n       builder measure --firmware F [--kernel K --initrd I --cmdline C --memory 2G --cpus 2 --platform P] (raw mode)\n\n")
		fs.PrintDefaults()
	}
	if code, ok := cli.ParseArgs(fs, args, 1); !ok {
		return code
	}
	p, code := pf.open("measure", fs.Arg(0), "", true, *asJSON, stderr)
	if p == nil {
		return code
	}
	res, err := build.Measure(ctx, p.plan, p.opts)
	pf.finish(p, err, stderr)
	if err != nil {
		return fail(stderr, "measure", err)
	}
	if *asJSON {
		b, err := res.Result.JSON()
		if err != nil {
			return fail(stderr, "measure", err)
		}
		stdout.Write(b)
		return cli.ExitOK
	}
	printMeasure(stdout, res.Result, res.Profile, res.Missing, res.Unset, *explain)
	return cli.ExitOK
}

// runMeasureRaw is raw mode: measure the given files for a platform.
func runMeasureRaw(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("measure", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fw := fs.String("firmware", "", "unified TDVF firmware image (OVMF.fd)")
	kernel := fs.String("kernel", "", "bzImage (EFI stub)")
	initrd := fs.String("initrd", "", "initrd")
	cmdline := fs.String("cmdline", "", "kernel command line (QEMU -append)")
	memory := fs.String("memory", "2G", "guest memory, e.g. 2G or 2048M")
	cpus := fs.Int("cpus", 2, "guest vCPUs")
	plat := fs.String("platform", platform.DefaultName, "platform profile (see builder platforms)")
	ccm := fs.String("cc-measurement", "auto", "whether the kernel's EFI stub measures the cmdline and initrd into RTMR2: auto (from its version: Linux >= 6.9), true or false (as the manifest's kernel.cc_measurement)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	explain := fs.Bool("explain", false, "print the events behind each register")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: builder measure --firmware F [--kernel K --initrd I --cmdline C --cc-measurement auto --memory 2G --cpus 2 --platform P] [--json] [--explain]\n       builder measure [manifest flags] MANIFEST   (manifest mode)\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if code, ok := cli.ParseArgs(fs, args, -1); !ok {
		return code
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "builder measure: unexpected argument %q in raw mode (a manifest cannot be combined with --firmware)\n", fs.Arg(0))
		return cli.ExitUsage
	}
	if *fw == "" {
		fmt.Fprintln(stderr, "builder measure: --firmware is empty")
		return cli.ExitUsage
	}
	mem, err := parseMeasureMemory(*memory)
	if err != nil {
		fmt.Fprintf(stderr, "builder measure: --memory: %v\n", err)
		return cli.ExitUsage
	}
	if *cpus < 1 {
		fmt.Fprintln(stderr, "builder measure: --cpus must be at least 1")
		return cli.ExitUsage
	}
	prof, err := platform.Lookup(*plat)
	if err != nil {
		fmt.Fprintf(stderr, "builder measure: --platform: %v\n", err)
		return cli.ExitUsage
	}
	in := measure.Inputs{Cmdline: *cmdline, MemoryMB: mem, CPUs: *cpus, Profile: prof}
	switch *ccm {
	case "auto":
	case "true", "false":
		v := *ccm == "true"
		in.CCMeasurement = &v
	default:
		fmt.Fprintf(stderr, "builder measure: --cc-measurement %q: want auto, true or false\n", *ccm)
		return cli.ExitUsage
	}
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
			return cli.ExitFail
		}
		*f.dst = b
	}
	r, err := measure.Compute(in)
	if err != nil {
		fmt.Fprintf(stderr, "builder measure: %v\n", err)
		return cli.ExitFail
	}
	if *asJSON {
		b, err := r.JSON()
		if err != nil {
			fmt.Fprintf(stderr, "builder measure: %v\n", err)
			return cli.ExitFail
		}
		stdout.Write(b)
		return cli.ExitOK
	}
	printMeasure(stdout, r, prof, nil, nil, *explain)
	return cli.ExitOK
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

// printMeasure writes the registers (with the reason for each unknown one)
// and the inputs that were missing.
func printMeasure(w io.Writer, r *measure.Result, p *platform.Profile, missing []build.Missing, unset []string, explain bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "platform\t%s (QEMU %s, OVMF %s)\n", p.Name, p.QEMUVersion, p.OVMFBuild)
	fmt.Fprintf(tw, "rules\t%s\n", p.Rules())
	for _, m := range missing {
		pin := "no verity_root_hash pin"
		if m.Pinned {
			pin = "verity_root_hash pinned"
		}
		fmt.Fprintf(tw, "missing\tpayload %q: %s (%s)\n", m.Payload, m.Reason, pin)
	}
	for _, u := range unset {
		fmt.Fprintf(tw, "missing\t%s: depends on a variable without a value\n", u)
	}
	for _, reg := range register.All {
		if v := r.Value(reg); v != nil {
			fmt.Fprintf(tw, "%s\t%x\n", reg.Name(), v[:])
		} else {
			fmt.Fprintf(tw, "%s\tunknown: %s\n", reg.Name(), r.Reasons[reg.Key()])
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(tw, "note\t%s\n", n)
	}
	tw.Flush()
	if !explain {
		return
	}
	for _, reg := range register.RTMRs {
		n := reg.Key()
		fmt.Fprintf(w, "\n%s events:\n", reg.Name())
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
