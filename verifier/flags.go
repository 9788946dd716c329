package main

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/verifier/collateral"
	"github.com/tdforge/tdforge/verifier/reference"
	"github.com/tdforge/tdforge/verifier/verify"

	"crypto/x509"
	"encoding/pem"
)

// policyFlags are the flags shared by the verifying commands.
type policyFlags struct {
	reference, referenceKey string
	allowSimulated          bool
	simRoot                 string
	allowDebug              bool
	collateral              string
	now                     string
	json                    bool
}

func (p *policyFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&p.reference, "reference", "", "reference-values `FILE` (JSON, or a signed DSSE envelope)")
	fs.StringVar(&p.referenceKey, "reference-key", "", "public key `PEM` the reference values must be signed with")
	fs.BoolVar(&p.allowSimulated, "allow-simulated", false, "accept quotes from the TDX simulator (dev images only; needs --sim-root)")
	fs.StringVar(&p.simRoot, "sim-root", "", "simulator root certificate `FILE` (PEM, the image's sim/root.pem)")
	fs.BoolVar(&p.allowDebug, "allow-debug", false, "accept a TD with the DEBUG attribute")
	fs.StringVar(&p.collateral, "collateral", "", "offline Intel PCS collateral `DIR` (from `verifier collateral fetch`); default: fetch online")
	fs.StringVar(&p.now, "now", "", "verify certificates and collateral at this RFC 3339 `TIME` instead of now")
	fs.BoolVar(&p.json, "json", false, "print the report as JSON")
}

// usageError prints a usage problem and returns exit code 2.
func usageError(fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "verifier %s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.Usage()
	return 2
}

func inputError(cmd string, err error) int {
	fmt.Fprintf(os.Stderr, "verifier %s: %v\n", cmd, err)
	return 2
}

// options builds verify.Options; refused is a NOT TRUSTED report when the
// reference's signature check failed.
func (p *policyFlags) options() (opts verify.Options, refused *verify.Report, err error) {
	if p.reference == "" {
		return opts, nil, errors.New("--reference FILE is required")
	}
	doc, chk, err := reference.Load(p.reference, p.referenceKey)
	if err != nil {
		return opts, nil, err
	}
	if doc == nil {
		return opts, verify.Refused(chk), nil
	}
	opts.Reference = doc
	if p.referenceKey != "" {
		opts.ReferenceCheck = &chk
	}
	opts.AllowDebug = p.allowDebug
	opts.AllowSimulated = p.allowSimulated
	if p.allowSimulated && p.simRoot == "" {
		return opts, nil, errors.New("--allow-simulated needs --sim-root FILE (the simulator root certificate of the image)")
	}
	if p.simRoot != "" {
		raw, err := os.ReadFile(p.simRoot)
		if err != nil {
			return opts, nil, fmt.Errorf("--sim-root: %v", err)
		}
		pool, err := rootPool(raw)
		if err != nil {
			return opts, nil, fmt.Errorf("--sim-root %s: %v", p.simRoot, err)
		}
		opts.SimRoots = pool
	}
	if p.collateral != "" {
		b, err := collateral.Open(p.collateral)
		if err != nil {
			return opts, nil, err
		}
		opts.Getter = b
	}
	if p.now != "" {
		t, err := time.Parse(time.RFC3339, p.now)
		if err != nil {
			return opts, nil, fmt.Errorf("--now %q: want RFC 3339, e.g. 2023-07-01T00:00:00Z", p.now)
		}
		opts.Now = t
	}
	return opts, nil, nil
}

// rootPool accepts a PEM certificate or a simulator pki.json.
func rootPool(raw []byte) (*x509.CertPool, error) {
	if b, _ := pem.Decode(raw); b != nil {
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		p := x509.NewCertPool()
		p.AddCert(c)
		return p, nil
	}
	var pki sim.PKI
	if err := jsonUnmarshal(raw, &pki); err != nil || pki.RootCert == "" {
		return nil, errors.New("not a PEM certificate or simulator pki.json")
	}
	return sim.RootPool(&pki), nil
}

// emit prints the report and returns its exit code.
func emit(w io.Writer, r *verify.Report, asJSON bool) int {
	if asJSON {
		r.WriteJSON(w)
	} else {
		r.WriteText(w)
	}
	return r.ExitCode()
}

func readOptional(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	return os.ReadFile(path)
}

func decodeHexFlag(name, s string, n int) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	b, err := hex.DecodeString(s)
	if err != nil || (n > 0 && len(b) != n) {
		if n > 0 {
			return nil, fmt.Errorf("--%s must be %d hex digits", name, 2*n)
		}
		return nil, fmt.Errorf("--%s must be hex", name)
	}
	return b, nil
}
