package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/internal/tdx/signing"
)

func TestSignCommand(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "release")
	var out, errb bytes.Buffer
	if code := runSign(context.Background(), []string{"--generate-key", "ecdsa-p256", "-o", prefix}, &out, &errb); code != cli.ExitOK {
		t.Fatalf("generate-key: %d %s", code, errb.String())
	}
	fi, err := os.Stat(prefix + ".key")
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode: %v %v", fi, err)
	}
	pub, err := os.ReadFile(prefix + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	// Keys are never overwritten.
	if code := runSign(context.Background(), []string{"--generate-key", "ed25519", "-o", prefix}, &out, &errb); code != cli.ExitFail || !strings.Contains(errb.String(), "already exists") {
		t.Fatalf("overwrite: %d %s", code, errb.String())
	}

	d := &refvalues.Document{Schema: refvalues.Schema, Image: refvalues.Image{Name: "img"}, Source: "builder"}
	d.Registers.Set(register.RTMR3, bytes.Repeat([]byte{7}, 48))
	doc, _ := d.Marshal()
	ref := filepath.Join(dir, "img.json")
	os.WriteFile(ref, doc, 0o644)

	// Flags after the positional argument work too.
	errb.Reset()
	if code := runSign(context.Background(), []string{ref, "--key", prefix + ".key"}, &out, &errb); code != cli.ExitOK {
		t.Fatalf("sign: %d %s", code, errb.String())
	}
	env, err := os.ReadFile(ref + ".dsse")
	if err != nil {
		t.Fatal(err)
	}
	got, err := signing.Verify(env, pub)
	if err != nil || !bytes.Equal(got, doc) {
		t.Fatalf("verify: %v", err)
	}
	custom := filepath.Join(dir, "custom.dsse")
	if code := runSign(context.Background(), []string{"-key", prefix + ".key", "-o", custom, ref}, &out, &errb); code != cli.ExitOK {
		t.Fatalf("sign -o: %d %s", code, errb.String())
	}
	if _, err := os.Stat(custom); err != nil {
		t.Fatal(err)
	}

	for name, tc := range map[string]struct {
		args []string
		code int
		want string
	}{
		"no args":       {nil, cli.ExitUsage, "need -key"},
		"no key":        {[]string{ref}, cli.ExitUsage, "need -key"},
		"two docs":      {[]string{"-key", prefix + ".key", ref, ref}, cli.ExitUsage, "exactly one"},
		"bad alg":       {[]string{"-generate-key", "rsa", "-o", prefix + "2"}, cli.ExitUsage, "unsupported key algorithm"},
		"gen no prefix": {[]string{"-generate-key", "ed25519"}, cli.ExitUsage, "-o PREFIX"},
		"public as key": {[]string{"-key", prefix + ".pub", ref}, cli.ExitFail, "public key was given"},
		"sign envelope": {[]string{"-key", prefix + ".key", ref + ".dsse"}, cli.ExitFail, "already a DSSE envelope"},
		"missing doc":   {[]string{"-key", prefix + ".key", filepath.Join(dir, "nope.json")}, cli.ExitFail, "no such file"},
		"bad flag":      {[]string{"-nope"}, cli.ExitUsage, "flag provided but not defined"},
	} {
		errb.Reset()
		if code := runSign(context.Background(), tc.args, &out, &errb); code != tc.code || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%s: exit %d (want %d), stderr %q (want %q)", name, code, tc.code, errb.String(), tc.want)
		}
	}
}
