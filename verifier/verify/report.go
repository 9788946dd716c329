package verify

import (
	"fmt"
	"io"
	"strings"

	"github.com/tdforge/tdforge/internal/canonjson"
	"github.com/tdforge/tdforge/internal/cli"
)

// WriteText prints the verdict, the table of checks and the first differing
// event of every register.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Verdict: %s\n", r.Headline())
	if r.Image != nil {
		fmt.Fprintf(&b, "Image:   %s %s", r.Image.Name, r.Image.Version)
		if r.Image.Dev {
			b.WriteString(" (dev)")
		}
		b.WriteString("\n")
	}
	width := 5
	for _, c := range r.Checks {
		width = max(width, len(c.Name))
	}
	fmt.Fprintf(&b, "\n%-*s  %-7s  %s\n", width, "CHECK", "STATUS", "REASON")
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "%-*s  %-7s  %s\n", width, c.Name, c.Status, c.Reason)
	}
	if len(r.Mismatches) > 0 {
		b.WriteString("\nFirst differing event per register:\n")
		for _, m := range r.Mismatches {
			fmt.Fprintf(&b, "  %s\n", m)
		}
	}
	if r.Simulated && r.Trusted {
		b.WriteString("\nSIMULATED: this TD ran on the TDX simulator, not on TDX hardware. It proves nothing about confidentiality.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	return canonjson.Encode(w, r)
}

// ExitCode maps the report to the shared exit codes: cli.ExitOK trusted,
// cli.ExitFail not trusted, cli.ExitUsage input error, cli.ExitNetwork
// network error.
func (r *Report) ExitCode() int {
	switch {
	case r.ErrorKind == ErrNetwork:
		return cli.ExitNetwork
	case r.ErrorKind == ErrInput:
		return cli.ExitUsage
	case r.Trusted:
		return cli.ExitOK
	}
	return cli.ExitFail
}

// Refused returns a NOT TRUSTED report made of the given checks, for
// evidence that cannot be evaluated (e.g. a reference whose signature
// failed).
func Refused(checks ...Check) *Report {
	r := &Report{Checks: checks}
	return r.finish()
}
