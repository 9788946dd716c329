package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/tdx/signing"
)

// parseInterspersed parses flags that may come before or after positional
// arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func runSign(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	key := fs.String("key", "", "PKCS#8 PEM private key (ed25519 or ecdsa-p256)")
	out := fs.String("o", "", "output: the envelope path (default REFERENCE.json.dsse), or with -generate-key the key path prefix")
	gen := fs.String("generate-key", "", "generate a key pair instead: ed25519 or ecdsa-p256; writes PREFIX.key (0600) and PREFIX.pub")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage:
  builder sign -key KEY.pem [-o OUT] REFERENCE.json
  builder sign -generate-key ed25519|ecdsa-p256 -o PREFIX

Wraps a reference-values document in an in-toto Statement v1 (predicate type
%s) and signs it into a DSSE envelope; the verifier checks it with the
matching public key.

Flags:
`, signing.PredicateType)
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return cli.ExitOK
	}
	if err != nil {
		return cli.ExitUsage
	}

	if *gen != "" {
		if *key != "" || len(pos) != 0 || *out == "" {
			fmt.Fprintln(stderr, "builder sign: -generate-key takes only -o PREFIX (no -key, no document)")
			return cli.ExitUsage
		}
		priv, pub, err := signing.GenerateKey(*gen)
		if err != nil {
			fmt.Fprintf(stderr, "builder sign: %v\n", err)
			return cli.ExitUsage
		}
		kp, pp := *out+".key", *out+".pub"
		for _, p := range []string{kp, pp} {
			if _, err := os.Lstat(p); err == nil {
				fmt.Fprintf(stderr, "builder sign: %s already exists; remove it or choose another -o prefix (keys are never overwritten)\n", p)
				return cli.ExitFail
			}
		}
		if err := fsutil.WriteFile(kp, priv, 0o600); err != nil {
			fmt.Fprintf(stderr, "builder sign: writing private key: %v\n", err)
			return cli.ExitFail
		}
		if err := fsutil.WriteFile(pp, pub, 0o644); err != nil {
			fmt.Fprintf(stderr, "builder sign: writing public key: %v\n", err)
			return cli.ExitFail
		}
		fmt.Fprintf(stdout, "wrote %s (private, keep it secret) and %s (public, give it to verifiers)\n", kp, pp)
		return cli.ExitOK
	}

	if *key == "" || len(pos) != 1 {
		fmt.Fprintln(stderr, "builder sign: need -key KEY.pem and exactly one REFERENCE.json (or -generate-key ALG -o PREFIX); see -h")
		return cli.ExitUsage
	}
	doc, err := os.ReadFile(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "builder sign: %v\n", err)
		return cli.ExitFail
	}
	keyPEM, err := os.ReadFile(*key)
	if err != nil {
		fmt.Fprintf(stderr, "builder sign: %v\n", err)
		return cli.ExitFail
	}
	env, err := signing.Sign(doc, keyPEM)
	if err != nil {
		fmt.Fprintf(stderr, "builder sign: %s: %v\n", pos[0], err)
		return cli.ExitFail
	}
	dst := *out
	if dst == "" {
		dst = pos[0] + ".dsse"
	}
	if err := fsutil.WriteFile(dst, env, 0o644); err != nil {
		fmt.Fprintf(stderr, "builder sign: %v\n", err)
		return cli.ExitFail
	}
	fmt.Fprintf(stdout, "wrote %s\n", dst)
	return cli.ExitOK
}
