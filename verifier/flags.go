package main

import (
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/verifier/client"
	"github.com/tdforge/tdforge/verifier/collateral"
	"github.com/tdforge/tdforge/verifier/reference"
	"github.com/tdforge/tdforge/verifier/verify"
)

// newFlags returns a command's flag set; its errors and usage go to stderr.
func newFlags(name, args string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: verifier %s [flags] %s\n", name, args)
		fs.PrintDefaults()
	}
	return fs
}

// usageError prints a command-line problem, its hints and the command's
// usage, and returns cli.ExitUsage.
func usageError(fs *flag.FlagSet, stderr io.Writer, err error) int {
	cli.PrintError(stderr, "verifier "+fs.Name(), err)
	fs.Usage()
	return cli.ExitUsage
}

// inputError prints an unusable input and its hints, and returns
// cli.ExitUsage.
func inputError(cmd string, stderr io.Writer, err error) int {
	cli.PrintError(stderr, "verifier "+cmd, err)
	return cli.ExitUsage
}

// agentArgs parses the command line of a command that talks to one agent
// (attest, proxy): the policy flags or an attestation service, and exactly
// one agent URL. When ok is false the command returns code: a usage or
// input error, or the verdict of options that refuse before any
// connection.
func agentArgs(fs *flag.FlagSet, pf *policyFlags, sf *serviceFlags, args []string, stdout, stderr io.Writer) (cfg client.Config, code int, ok bool) {
	if code, ok := cli.ParseArgs(fs, args, -1); !ok {
		return cfg, code, false
	}
	if fs.NArg() != 1 {
		return cfg, usageError(fs, stderr, errWantURL(fs.Name())), false
	}
	if _, err := client.ParseURL(fs.Arg(0)); err != nil {
		return cfg, usageError(fs, stderr, err), false
	}
	if sf.url != "" {
		svc, err := sf.service(fs)
		if err != nil {
			return cfg, usageError(fs, stderr, err), false
		}
		return client.Config{Service: svc}, cli.ExitOK, true
	}
	if sf.ca != "" {
		return cfg, usageError(fs, stderr, cli.WithHint(errors.New("--service-ca without --attestation-service"), "add --attestation-service https://SERVICE, or drop --service-ca")), false
	}
	opts, refused, err := pf.options()
	if err != nil {
		return cfg, inputError(fs.Name(), stderr, err), false
	}
	if refused != nil {
		return cfg, emit(stdout, refused, pf.json), false
	}
	return client.Config{Options: opts}, cli.ExitOK, true
}

// serviceFlags select appraisal through an attestation service
// (`verifier serve`) instead of in-process.
type serviceFlags struct {
	url, ca string
}

func (s *serviceFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&s.url, "attestation-service", "", "appraise through the attestation service at `URL` (https://SERVICE; its signed result is checked against its JWKS, the TLS key binding here) instead of in-process")
	fs.StringVar(&s.ca, "service-ca", "", "CA certificate `PEM` file the attestation service's TLS certificate must chain to (default: the system roots)")
}

// localOnly are the flags of an in-process appraisal: with an attestation
// service the service's references and policy decide, so they are refused
// rather than silently ignored.
var localOnly = []string{"reference", "reference-key", "allow-simulated", "sim-root", "allow-debug", "collateral", "now", "accept-unpinned"}

// service builds the service client; fs is checked for flags that only an
// in-process appraisal uses.
func (s *serviceFlags) service(fs *flag.FlagSet) (*client.RemoteService, error) {
	var set []string
	fs.Visit(func(f *flag.Flag) {
		if slices.Contains(localOnly, f.Name) {
			set = append(set, "--"+f.Name)
		}
	})
	if len(set) > 0 {
		return nil, cli.WithHint(fmt.Errorf("%s: the attestation service appraises with its own references and policy", strings.Join(set, ", ")),
			"drop %s, or drop --attestation-service to appraise here", strings.Join(set, ", "))
	}
	var roots *x509.CertPool
	if s.ca != "" {
		raw, err := os.ReadFile(s.ca)
		if err != nil {
			return nil, fmt.Errorf("--service-ca: %v", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(raw) {
			return nil, cli.WithHint(fmt.Errorf("--service-ca %s: no PEM certificate in it", s.ca), "give the CA certificate (PEM) that signed the service's TLS certificate")
		}
	}
	svc, err := client.NewRemoteService(s.url, roots)
	if err != nil {
		return nil, cli.WithHint(err, "--attestation-service https://SERVICE:PORT")
	}
	return svc, nil
}

// attestError prints a failed attestation and returns cli.ExitNetwork when
// the agent could not be reached, else cli.ExitFail.
func attestError(cmd string, stderr io.Writer, err error) int {
	cli.PrintError(stderr, "verifier "+cmd, err)
	if errors.As(err, new(*client.NetworkError)) {
		return cli.ExitNetwork
	}
	return cli.ExitFail
}

func errWantURL(cmd string) error {
	return cli.WithHint(errors.New("want exactly one agent URL"), "verifier %s [flags] https://AGENT:PORT", cmd)
}

// policyFlags are the flags shared by the verifying commands.
type policyFlags struct {
	reference, referenceKey string
	trustFlags
	allowDebug bool
	json       bool
	accept     acceptFlag
}

// trustFlags say what a quote's signature chain may verify to and with
// which collateral, at what time: the verifying commands' and record's.
type trustFlags struct {
	allowSimulated bool
	simRoot        string
	collateral     string
	now            string
}

func (t *trustFlags) add(fs *flag.FlagSet) {
	fs.BoolVar(&t.allowSimulated, "allow-simulated", false, "accept quotes from the TDX simulator (dev images only; needs --sim-root)")
	fs.StringVar(&t.simRoot, "sim-root", "", "simulator root certificate `FILE` (PEM: the sim-root.pem 'builder launch --simulate' writes next to its --pidfile)")
	fs.StringVar(&t.collateral, "collateral", "", "offline Intel PCS collateral `DIR` (from `verifier collateral fetch`); default: fetch online")
	fs.StringVar(&t.now, "now", "", "verify certificates and collateral at this RFC 3339 `TIME` instead of now")
}

// apply sets opts' simulator roots, collateral getter and time.
func (t *trustFlags) apply(opts *verify.Options) error {
	opts.AllowSimulated = t.allowSimulated
	if t.allowSimulated && t.simRoot == "" {
		return cli.WithHint(verify.ErrNoSimRoot, "--allow-simulated needs --sim-root FILE (the sim-root.pem of the launch, next to its --pidfile)")
	}
	if t.simRoot != "" {
		pool, err := readSimRoot(t.simRoot)
		if err != nil {
			return err
		}
		opts.SimRoots = pool
	}
	if t.collateral != "" {
		b, err := collateral.Open(t.collateral)
		if errors.Is(err, fs.ErrNotExist) {
			err = cli.WithHint(err, "write one with `verifier collateral fetch -o %s --quote FILE`", t.collateral)
		}
		if err != nil {
			return err
		}
		opts.Getter = b
	}
	if t.now != "" {
		tm, err := time.Parse(time.RFC3339, t.now)
		if err != nil {
			return fmt.Errorf("--now %q: want RFC 3339, e.g. 2023-07-01T00:00:00Z", t.now)
		}
		opts.Now = tm
	}
	return nil
}

// acceptFlag is --accept-unpinned: register keys, repeatable or comma
// separated (register.Parse).
type acceptFlag []register.Register

func (a *acceptFlag) String() string {
	var keys []string
	for _, r := range *a {
		keys = append(keys, r.Key())
	}
	return strings.Join(keys, ",")
}

func (a *acceptFlag) Set(v string) error {
	for _, k := range strings.Split(v, ",") {
		r, err := register.Parse(strings.TrimSpace(k))
		if err != nil {
			return fmt.Errorf("%v (want mrtd, rtmr0, rtmr1, rtmr2 or rtmr3)", err)
		}
		if !slices.Contains(*a, r) {
			*a = append(*a, r)
		}
	}
	return nil
}

// addAccept registers --accept-unpinned on fs.
func addAccept(fs *flag.FlagSet, a *acceptFlag) {
	fs.Var(a, "accept-unpinned", "accept these `REGISTERS` (e.g. rtmr0; comma list or repeated) although the reference leaves them unpinned; the verdict says what goes unchecked")
}

func (p *policyFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&p.reference, "reference", "", "reference-values `FILE` (JSON, or a signed DSSE envelope)")
	fs.StringVar(&p.referenceKey, "reference-key", "", "public key `PEM` the reference values must be signed with")
	p.trustFlags.add(fs)
	fs.BoolVar(&p.allowDebug, "allow-debug", false, "accept a TD with the DEBUG attribute")
	fs.BoolVar(&p.json, "json", false, "print the report as JSON")
	addAccept(fs, &p.accept)
}

// errNoReference is a verifying command run without reference values.
var errNoReference = errors.New("no reference values given")

// options builds verify.Options; refused is a NOT TRUSTED report when the
// reference's signature check failed.
func (p *policyFlags) options() (opts verify.Options, refused *verify.Report, err error) {
	if p.reference == "" {
		return opts, nil, cli.WithHint(errNoReference, "add --reference FILE (the image's reference-values.json)")
	}
	doc, chk, err := loadReference(p.reference, p.referenceKey)
	if err != nil {
		return opts, nil, err
	}
	if doc == nil {
		r := verify.Refused(chk)
		addHints(r)
		return opts, r, nil
	}
	opts.Reference = doc
	opts.ReferenceCheck = &chk
	opts.AllowDebug = p.allowDebug
	opts.AcceptUnpinned = p.accept
	if err := p.trustFlags.apply(&opts); err != nil {
		return opts, nil, err
	}
	return opts, nil, nil
}

// loadReference is reference.Load with the command-line hint for a refused
// input (e.g. an envelope without --reference-key).
func loadReference(path, key string) (*refvalues.Document, verify.Check, error) {
	doc, chk, err := reference.Load(path, key)
	if err != nil {
		if h := checkHint(err); h != "" {
			err = cli.WithHint(err, "%s", h)
		}
	}
	return doc, chk, err
}

// evidenceFlags name the evidence files of quote and record.
type evidenceFlags struct {
	quote, ccel, table, runtimeLog string
}

func (e *evidenceFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&e.quote, "quote", "", "raw TDX quote `FILE`")
	fs.StringVar(&e.ccel, "ccel", "", "firmware event log `FILE` (CCEL data)")
	fs.StringVar(&e.table, "ccel-table", "", "CCEL ACPI table `FILE`")
	fs.StringVar(&e.runtimeLog, "event-log", "", "runtime RTMR3 event log `FILE` (CEL)")
}

// check reports a missing quote or stray arguments.
func (e *evidenceFlags) check(fs *flag.FlagSet) error {
	switch {
	case fs.NArg() != 0:
		return cli.WithHint(fmt.Errorf("unexpected arguments %q", fs.Args()), "evidence files are flags: --quote FILE [--ccel F --ccel-table F --event-log F]")
	case e.quote == "":
		return cli.WithHint(errors.New("no quote given"), "add --quote FILE")
	}
	return nil
}

// read loads the evidence files; unset ones stay empty.
func (e *evidenceFlags) read() (verify.Evidence, error) {
	var ev verify.Evidence
	for _, f := range []struct {
		path string
		dst  *[]byte
	}{{e.quote, &ev.Quote}, {e.ccel, &ev.CCEL}, {e.table, &ev.CCELTable}, {e.runtimeLog, &ev.RuntimeLog}} {
		if f.path == "" {
			continue
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			return ev, err
		}
		*f.dst = b
	}
	return ev, nil
}

// readSimRoot reads --sim-root: one PEM certificate, the launch's
// sim-root.pem (sim.ParseRoot). Nothing else is accepted, so a file holding
// the simulator's private keys is never needed (or handed) to a verifier.
func readSimRoot(path string) (*x509.CertPool, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--sim-root: %v", err)
	}
	pool, err := sim.ParseRoot(raw)
	if err != nil {
		return nil, fmt.Errorf("--sim-root %s: %v: pass the sim-root.pem that 'builder launch --simulate' writes next to its --pidfile", path, err)
	}
	return pool, nil
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
