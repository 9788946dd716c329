// Command verifier checks that a tdforge TD runs exactly the image its
// reference values describe: quote authenticity and TCB (Intel PCS
// collateral, online or from an offline bundle), freshness and TLS binding,
// registers and attributes, and the firmware and runtime event logs.
//
// Exit codes: 0 trusted, 1 not trusted, 2 usage or input error, 3 network.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sort"
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string) int
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

func usage() {
	fmt.Fprintln(os.Stderr, "usage: verifier <command> [flags] [args]\n\ncommands:")
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-11s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(os.Stderr, "\nexit codes: 0 trusted, 1 not trusted, 2 usage/input error, 3 network error")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage()
		return 2
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "verifier: unknown command %q\n", args[0])
		usage()
		return 2
	}
	return c.run(ctx, args[1:])
}
