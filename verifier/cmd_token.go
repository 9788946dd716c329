package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/veraison/ear"

	"github.com/tdforge/tdforge/internal/canonjson"
	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/verifier/client"
	"github.com/tdforge/tdforge/verifier/result"
)

// cmdToken checks an attestation result for a relying party:
// `verifier token verify --jwks URL|FILE TOKEN`.
func cmdToken(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(stderr, "usage: verifier token verify --jwks URL|FILE [--nonce HEX] [--allow-warning] [--json] TOKEN|@FILE|-")
		return cli.ExitUsage
	}
	fs := newFlags("token verify", "TOKEN|@FILE|-", stderr)
	jwksArg := fs.String("jwks", "", "the service's key set: `URL` (https://SERVICE/.well-known/jwks.json) or FILE")
	nonceHex := fs.String("nonce", "", "`HEX` nonce the result must answer (the one from the service's GET /v1/nonce)")
	allowWarning := fs.Bool("allow-warning", false, "exit 0 for ear.status warning too (e.g. an accepted simulated TD)")
	asJSON := fs.Bool("json", false, "print the verified claims as JSON")
	if code, ok := cli.ParseArgs(fs, args[1:], -1); !ok {
		return code
	}
	if fs.NArg() != 1 || *jwksArg == "" {
		return usageError(fs, stderr, cli.WithHint(errors.New("want --jwks and one token"), "verifier token verify --jwks https://SERVICE/.well-known/jwks.json TOKEN"))
	}
	tok, err := readToken(fs.Arg(0))
	if err != nil {
		return inputError("token verify", stderr, err)
	}
	jwks, err := readJWKS(ctx, *jwksArg)
	if err != nil {
		cli.PrintError(stderr, "verifier token verify", err)
		if errors.As(err, new(*client.NetworkError)) {
			return cli.ExitNetwork
		}
		return cli.ExitUsage
	}
	c, err := result.Verify(tok, jwks)
	if err != nil {
		return inputError("token verify", stderr, err)
	}
	if *nonceHex != "" {
		want, err := hex.DecodeString(*nonceHex)
		got, gerr := c.Nonce()
		if err != nil || gerr != nil || hex.EncodeToString(got) != hex.EncodeToString(want) {
			cli.PrintError(stderr, "verifier token verify", fmt.Errorf("the result answers nonce %x, not --nonce %s: a replayed result", got, *nonceHex))
			return cli.ExitFail
		}
	}
	a := c.TDX()
	if *asJSON {
		canonjson.Encode(stdout, map[string]any{"kid": c.KeyID, "issued_at": c.IssuedAt.UTC(), "expires": c.Expires.UTC(), "claims": c.Result.AsMap()})
	} else {
		fmt.Fprintf(stdout, "Signature: valid (ES256, key %s)\n", c.KeyID)
		fmt.Fprintf(stdout, "Expires:   %s\n", c.Expires.UTC().Format(time.RFC3339))
		fmt.Fprintf(stdout, "Status:    %s\n", a.Status)
		if a.AppraisalPolicyID != nil {
			fmt.Fprintf(stdout, "Policy:    %s\n", *a.AppraisalPolicyID)
		}
		if a.VeraisonAnnotatedEvidence != nil {
			ev := *a.VeraisonAnnotatedEvidence
			if img, ok := ev["image"].(map[string]any); ok {
				fmt.Fprintf(stdout, "Image:     %v %v\n", img["name"], img["version"])
			}
			fmt.Fprintf(stdout, "TLS SPKI:  sha256 %v (compare with the key you connected to)\n", ev["tls_spki_sha256"])
			if checks, ok := ev["checks"].([]any); ok {
				for _, x := range checks {
					if m, ok := x.(map[string]any); ok && m["status"] != "PASS" {
						fmt.Fprintf(stdout, "  %-28v %-7v %v\n", m["name"], m["status"], m["reason"])
					}
				}
			}
		}
		if a.TrustVector != nil {
			fmt.Fprintf(stdout, "Vector:    %s\n", strings.TrimSpace(a.TrustVector.Report(true, false)))
		}
	}
	switch {
	case *a.Status == ear.TrustTierAffirming:
		return cli.ExitOK
	case *a.Status == ear.TrustTierWarning && *allowWarning:
		return cli.ExitOK
	}
	return cli.ExitFail
}

// readToken reads a token argument: the token, @FILE or - (stdin).
func readToken(arg string) ([]byte, error) {
	var b []byte
	var err error
	switch {
	case arg == "-":
		b, err = io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
	case strings.HasPrefix(arg, "@"):
		b, err = os.ReadFile(arg[1:])
	default:
		b = []byte(arg)
	}
	return []byte(strings.TrimSpace(string(b))), err
}

// readJWKS reads the key set from a file or fetches it
// (client.FetchJWKS: over HTTPS, or plain HTTP to a loopback address only).
func readJWKS(ctx context.Context, arg string) ([]byte, error) {
	if !strings.Contains(arg, "://") {
		b, err := os.ReadFile(arg)
		if err != nil {
			return nil, fmt.Errorf("--jwks: %v", err)
		}
		return b, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	b, err := client.FetchJWKS(ctx, arg, nil)
	if err != nil {
		err = fmt.Errorf("--jwks %s: %w", arg, err)
		if !errors.As(err, new(*client.NetworkError)) && !errors.As(err, new(*client.ServiceError)) {
			err = cli.WithHint(err, "https://SERVICE/.well-known/jwks.json, or a file")
		}
		return nil, err
	}
	return b, nil
}
