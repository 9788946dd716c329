package cli

import (
	"bytes"
	"context"
	"errors"
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
