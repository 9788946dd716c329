// Command builder turns a tdforge HCL manifest into a deterministic TD guest
// image and precomputes its reference values.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// Exit codes, documented in --help.
const (
	exitOK      = 0 // success
	exitFail    = 1 // the manifest, an input or the build is wrong (diagnostics printed)
	exitUsage   = 2 // bad command line
	exitNetwork = 3 // a remote input could not be fetched
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string) int
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

func usage() {
	fmt.Fprintf(os.Stderr, `builder: reproducible TDX image builder (tdforge)

Usage: builder <command> [flags] [args]

Commands:
`)
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(os.Stderr, `
Run 'builder <command> -h' for a command's flags.

Exit codes:
  0  success
  1  the manifest, an input or the build is wrong (diagnostics printed)
  2  bad command line
  3  a remote input could not be fetched (network)
`)
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(exitUsage)
		}
		os.Exit(exitOK)
	}
	c, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "builder: unknown command %q; run 'builder help' for the list\n", os.Args[1])
		os.Exit(exitUsage)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := c.run(ctx, os.Args[2:])
	stop()
	os.Exit(code)
}
