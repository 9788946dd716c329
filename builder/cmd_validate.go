package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/manifest"
)

// varFlags collects repeated -var name=value flags.
type varFlags map[string]string

func (v varFlags) String() string { return "" }

func (v varFlags) Set(s string) error {
	name, val, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return fmt.Errorf("want -var name=value, got %q", s)
	}
	v[name] = val // as in Terraform, a later -var for the same name wins
	return nil
}

// listFlag collects a repeated string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// addVarFlags registers -var and -var-file on fs; other commands that load a
// manifest reuse it so all take variables the same way.
func addVarFlags(fs *flag.FlagSet) (varFlags, *listFlag) {
	vars := varFlags{}
	files := &listFlag{}
	fs.Var(vars, "var", "set a manifest variable: -var name=value (repeatable)")
	fs.Var(files, "var-file", "read variables from an HCL file of name = value lines (repeatable)")
	return vars, files
}

// printDiags writes diagnostics as text (with snippets) to w.
func printDiags(w io.Writer, d *manifest.Diagnostics) {
	color, width := false, uint(0)
	if f, ok := w.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil {
			color = os.Getenv("NO_COLOR") == ""
			width = uint(ws.Col)
		}
	}
	if err := d.WriteText(w, color, width); err != nil {
		fmt.Fprintln(w, d.Error())
	}
}

func runValidate(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: builder validate [-var name=value]... [-var-file FILE]... [--json] MANIFEST\n\n"+
			"Checks a manifest without building. Variables without a value are\n"+
			"treated as unknown, as terraform validate does.\n\n")
		fs.PrintDefaults()
	}
	vars, files := addVarFlags(fs)
	asJSON := fs.Bool("json", false, "print diagnostics as a JSON array on stdout")
	if code, ok := cli.ParseArgs(fs, args, -1); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "builder validate: want exactly one MANIFEST argument")
		fs.Usage()
		return cli.ExitUsage
	}
	m, diags := manifest.Load(fs.Arg(0), manifest.LoadOptions{
		Vars: vars, VarFiles: *files, Environ: os.Environ(), AllowUnknown: true,
	})
	if *asJSON {
		stdout.Write(diags.JSON())
	} else if len(diags.Diags) > 0 {
		printDiags(stderr, diags)
	}
	if diags.HasErrors() {
		return cli.ExitFail
	}
	if !*asJSON {
		fmt.Fprintf(stdout, "manifest OK: %s %s (%d payloads, %d services)\n", m.Image.Name, m.Image.Version, len(m.Payloads), len(m.Services))
		if len(m.Unknown) > 0 {
			fmt.Fprintf(stderr, "note: %d attributes depend on variables without a value (set them for build): %s\n",
				len(m.Unknown), strings.Join(m.Unknown, ", "))
		}
	}
	return cli.ExitOK
}
