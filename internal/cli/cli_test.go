package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"
)

func testProgram() *Program {
	return &Program{Name: "prog", Summary: "does things", Footer: "Exit codes: 0 ok",
		Commands: []*Command{{Name: "hello", Summary: "greets", Run: func(_ context.Context, args []string, stdout, _ io.Writer) int {
			fmt.Fprintf(stdout, "hello %s\n", strings.Join(args, " "))
			return ExitOK
		}}}}
}

func TestRunDispatches(t *testing.T) {
	var out, errb bytes.Buffer
	if code := testProgram().Run(context.Background(), []string{"hello", "a", "b"}, &out, &errb); code != ExitOK || out.String() != "hello a b\n" {
		t.Fatalf("code %d, stdout %q", code, out.String())
	}
	out.Reset()
	if code := testProgram().Run(context.Background(), []string{"nope"}, &out, &errb); code != ExitUsage || !strings.Contains(errb.String(), `unknown command "nope"`) {
		t.Fatalf("code %d, stderr %q", code, errb.String())
	}
	out.Reset()
	if code := testProgram().Run(context.Background(), []string{"help"}, &out, &errb); code != ExitOK ||
		!strings.Contains(out.String(), "hello        greets") || !strings.Contains(out.String(), "Exit codes: 0 ok") {
		t.Fatalf("code %d, help %q", code, out.String())
	}
	if code := testProgram().Run(context.Background(), nil, &out, &errb); code != ExitUsage {
		t.Fatalf("no args: code %d", code)
	}
}

func TestHints(t *testing.T) {
	base := errors.New("reference is a DSSE envelope but no key was given")
	err := WithHint(fmt.Errorf("load: %w", WithHint(base, "inner")), "add --reference-key FILE")
	if !errors.Is(err, base) {
		t.Fatal("hint hides the cause")
	}
	var b bytes.Buffer
	PrintError(&b, "verifier", err)
	want := "verifier: load: reference is a DSSE envelope but no key was given\nverifier: hint: add --reference-key FILE\nverifier: hint: inner\n"
	if b.String() != want {
		t.Fatalf("got %q\nwant %q", b.String(), want)
	}
	if WithHint(nil, "x") != nil {
		t.Fatal("nil error gained a hint")
	}
}

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		n      int
		code   int
		ok     bool
		usages int
	}{
		{[]string{"-v", "DIR"}, 1, ExitOK, true, 0},
		{[]string{"a", "b"}, -1, ExitOK, true, 0},
		{[]string{"-h"}, 1, ExitOK, false, 1},
		{[]string{"-nope"}, 1, ExitUsage, false, 1},
		{[]string{"-v"}, 1, ExitUsage, false, 1},
		{[]string{"a"}, 0, ExitUsage, false, 1},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.Bool("v", false, "")
		usages := 0
		fs.Usage = func() { usages++ }
		code, ok := ParseArgs(fs, tc.args, tc.n)
		if code != tc.code || ok != tc.ok || usages != tc.usages {
			t.Errorf("%q n=%d: got (%d, %v, %d usages), want (%d, %v, %d)", tc.args, tc.n, code, ok, usages, tc.code, tc.ok, tc.usages)
		}
	}
}
