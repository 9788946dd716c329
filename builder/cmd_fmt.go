package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/manifest"
)

func runFmt(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fmt", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: builder fmt [-check] [-diff] FILE|DIR...\n\n"+
			"Rewrites HCL manifests (and .hcl files in the given directories) in\n"+
			"canonical format and lists the files it changed.\n\n")
		fs.PrintDefaults()
	}
	check := fs.Bool("check", false, "do not write; exit 1 if any file is not formatted")
	diff := fs.Bool("diff", false, "print a unified diff of the changes")
	if code, ok := cli.ParseArgs(fs, args, -1); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "builder fmt: name at least one FILE or DIR")
		fs.Usage()
		return cli.ExitUsage
	}
	var files []string
	for _, arg := range fs.Args() {
		st, err := os.Stat(arg)
		if err != nil {
			fmt.Fprintf(stderr, "builder fmt: %v\n", err)
			return cli.ExitFail
		}
		if !st.IsDir() {
			files = append(files, arg)
			continue
		}
		matches, err := filepath.Glob(filepath.Join(arg, "*.hcl"))
		if err != nil {
			fmt.Fprintf(stderr, "builder fmt: %v\n", err)
			return cli.ExitFail
		}
		files = append(files, matches...)
	}
	code := cli.ExitOK
	for _, name := range files {
		src, err := os.ReadFile(name)
		if err != nil {
			fmt.Fprintf(stderr, "builder fmt: %v\n", err)
			code = cli.ExitFail
			continue
		}
		out, err := manifest.FormatFile(src, name)
		if err != nil {
			fmt.Fprintf(stderr, "builder fmt: %s: syntax error, not formatted:\n%v\n", name, err)
			code = cli.ExitFail
			continue
		}
		if string(out) == string(src) {
			continue
		}
		fmt.Fprintln(stdout, name)
		if *diff {
			fmt.Fprint(stdout, unifiedDiff(name, string(src), string(out)))
		}
		if *check {
			code = cli.ExitFail
			continue
		}
		st, err := os.Stat(name)
		if err != nil {
			fmt.Fprintf(stderr, "builder fmt: %v\n", err)
			code = cli.ExitFail
			continue
		}
		if err := fsutil.WriteFile(name, out, st.Mode().Perm()); err != nil {
			fmt.Fprintf(stderr, "builder fmt: write %s: %v\n", name, err)
			code = cli.ExitFail
		}
	}
	return code
}

// unifiedDiff renders a unified diff (3 lines of context) between a and b,
// from a longest-common-subsequence line alignment.
func unifiedDiff(name, a, b string) string {
	x := strings.SplitAfter(a, "\n")
	y := strings.SplitAfter(b, "\n")
	if x[len(x)-1] == "" {
		x = x[:len(x)-1]
	}
	if y[len(y)-1] == "" {
		y = y[:len(y)-1]
	}
	n, m := len(x), len(y)
	lcs := make([][]int32, n+1)
	for i := range lcs {
		lcs[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type op struct {
		kind byte // ' ', '-', '+'
		line string
		i, j int // 0-based line indexes in a and b before this op
	}
	var ops []op
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && x[i] == y[j]:
			ops = append(ops, op{' ', x[i], i, j})
			i, j = i+1, j+1
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			ops = append(ops, op{'-', x[i], i, j})
			i++
		default:
			ops = append(ops, op{'+', y[j], i, j})
			j++
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "--- %s\n+++ %s (formatted)\n", name, name)
	const context = 3
	for k := 0; k < len(ops); {
		if ops[k].kind == ' ' {
			k++
			continue
		}
		start := max(k-context, 0)
		end := k
		for end < len(ops) {
			if ops[end].kind != ' ' {
				end++
				continue
			}
			run := end
			for run < len(ops) && ops[run].kind == ' ' {
				run++
			}
			if run == len(ops) || run-end > 2*context {
				end = min(end+context, len(ops))
				break
			}
			end = run
		}
		var da, db int
		for _, o := range ops[start:end] {
			if o.kind != '+' {
				da++
			}
			if o.kind != '-' {
				db++
			}
		}
		fmt.Fprintf(&sb, "@@ -%d,%d +%d,%d @@\n", ops[start].i+1, da, ops[start].j+1, db)
		for _, o := range ops[start:end] {
			sb.WriteByte(o.kind)
			sb.WriteString(o.line)
			if !strings.HasSuffix(o.line, "\n") {
				sb.WriteString("\n\\ No newline at end of file\n")
			}
		}
		k = end
	}
	return sb.String()
}
