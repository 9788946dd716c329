// Package cli is what tdforge's programs share on the command line: the
// named exit codes, an explicit command table whose commands write to the
// writers they are given (so tests call them directly), and errors that
// carry a hint telling the user what to do.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Exit codes shared by builder and verifier.
const (
	ExitOK      = 0 // success (verifier: trusted)
	ExitFail    = 1 // the manifest, an input or the build is wrong; verifier: not trusted
	ExitUsage   = 2 // bad command line or unusable input file
	ExitNetwork = 3 // a remote input or service could not be reached
)

// Command is one entry of a program's command table.
type Command struct {
	Name    string
	Summary string
	// Run executes the command. args excludes the command name; output goes
	// to stdout and stderr only. It returns an exit code.
	Run func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// Program is a program's explicit command table.
type Program struct {
	Name     string
	Summary  string
	Commands []*Command // in the order help lists them
	Footer   string     // printed after the command list (exit codes)
}

// Lookup returns the named command, or nil.
func (p *Program) Lookup(name string) *Command {
	for _, c := range p.Commands {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Usage writes the program's help.
func (p *Program) Usage(w io.Writer) {
	fmt.Fprintf(w, "%s: %s\n\nUsage: %s <command> [flags] [args]\n\nCommands:\n", p.Name, p.Summary, p.Name)
	for _, c := range p.Commands {
		fmt.Fprintf(w, "  %-12s %s\n", c.Name, c.Summary)
	}
	fmt.Fprintf(w, "\nRun '%s <command> -h' for a command's flags.\n", p.Name)
	if p.Footer != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(p.Footer, "\n"))
	}
}

// Run dispatches args (without the program name) to a command.
func (p *Program) Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		p.Usage(stderr)
		return ExitUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		p.Usage(stdout)
		return ExitOK
	}
	c := p.Lookup(args[0])
	if c == nil {
		fmt.Fprintf(stderr, "%s: unknown command %q; run '%s help' for the list\n", p.Name, args[0], p.Name)
		return ExitUsage
	}
	return c.Run(ctx, args[1:], stdout, stderr)
}

// HintError is an error with advice for the person at the command line.
// Libraries return plain errors that state facts; commands wrap them with
// the flag or action that fixes them (as age's errorWithHint).
type HintError struct {
	Err  error
	Hint string
}

func (e *HintError) Error() string { return e.Err.Error() }
func (e *HintError) Unwrap() error { return e.Err }

// WithHint attaches a hint to err; a nil err stays nil.
func WithHint(err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	return &HintError{Err: err, Hint: fmt.Sprintf(format, a...)}
}

// PrintError writes "prog: err" and, when err carries hints, one
// "prog: hint: ..." line for each.
func PrintError(w io.Writer, prog string, err error) {
	fmt.Fprintf(w, "%s: %v\n", prog, err)
	for _, h := range Hints(err) {
		fmt.Fprintf(w, "%s: hint: %s\n", prog, h)
	}
}

// Hints returns the hints err carries, outermost first.
func Hints(err error) []string {
	var out []string
	for err != nil {
		var h *HintError
		if !errors.As(err, &h) {
			break
		}
		out = append(out, h.Hint)
		err = h.Err
	}
	return out
}

// ParseArgs parses args into fs and, when n >= 0, checks that exactly n
// positional arguments remain. ok is false when the command should stop
// and return code: ExitOK after -h (fs has printed its usage), ExitUsage
// for a bad flag or a wrong argument count (after fs.Usage).
func ParseArgs(fs *flag.FlagSet, args []string, n int) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK, false
		}
		return ExitUsage, false
	}
	if n >= 0 && fs.NArg() != n {
		fs.Usage()
		return ExitUsage, false
	}
	return ExitOK, true
}
