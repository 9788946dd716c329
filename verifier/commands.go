package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/veraison/ear"

	"github.com/tdforge/tdforge/internal/canonjson"
	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/verifier/client"
	"github.com/tdforge/tdforge/verifier/collateral"
	"github.com/tdforge/tdforge/verifier/explain"
	"github.com/tdforge/tdforge/verifier/record"
	"github.com/tdforge/tdforge/verifier/reference"
	"github.com/tdforge/tdforge/verifier/verify"
)

// program is the verifier's command table, in the order help lists it.
var program = &cli.Program{
	Name:    "verifier",
	Summary: "decide whether a tdforge TD runs exactly the image its reference values describe",
	Commands: []*cli.Command{
		{Name: "attest", Summary: "attest a running agent over TLS and print the verdict", Run: cmdAttest},
		{Name: "quote", Summary: "verify a saved quote and event logs offline", Run: cmdQuote},
		{Name: "proxy", Summary: "local attested proxy for Ollama/OpenAI clients", Run: cmdProxy},
		{Name: "explain", Summary: "print the register and event diff of a saved attestation", Run: cmdExplain},
		{Name: "record", Summary: "write reference values pinned to a known-good quote", Run: cmdRecord},
		{Name: "reference", Summary: "reference merge: add a recorded RTMR0 to a reference's accepted values", Run: cmdReference},
		{Name: "collateral", Summary: "collateral fetch: write an offline Intel PCS collateral bundle", Run: cmdCollateral},
		{Name: "serve", Summary: "run the attestation service: signed EAR results over HTTPS", Run: cmdServe},
		{Name: "token", Summary: "token verify: check an attestation result against the service's JWKS", Run: cmdToken},
	},
	Footer: "Exit codes: 0 trusted, 1 not trusted, 2 usage/input error, 3 network error",
}

func cmdAttest(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("attest", "https://AGENT:PORT", stderr)
	var pf policyFlags
	pf.add(fs)
	var sf serviceFlags
	sf.add(fs)
	save := fs.String("save", "", "also save the attestation response (evidence) to `FILE` for `verifier explain`")
	floor := fs.Uint64("state-floor", 0, "fail (rollback) when the agent's state generation is below `N`, the highest generation seen before (0: no check)")
	cfg, code, ok := agentArgs(fs, &pf, &sf, args, stdout, stderr)
	if !ok {
		return code
	}
	res, err := client.Attest(ctx, fs.Arg(0), cfg)
	if err != nil {
		return attestError("attest", stderr, err)
	}
	addHints(res.Report)
	if *save != "" {
		b, _ := canonjson.Marshal(res.Response)
		if err := fsutil.WriteFile(*save, b, 0o644); err != nil {
			cli.PrintError(stderr, "verifier attest", err)
		}
	}
	st := checkState(res.Response, *floor)
	// The service's own readiness, over the pinned key: information next to
	// the verdict (a measured TD can still have a service down).
	svc, serr := client.ServiceStatus(ctx, fs.Arg(0), res.SPKIHash)
	if serr != nil {
		svc = &client.Service{Error: serr.Error()}
	}
	if !pf.json {
		fmt.Fprintf(stdout, "Agent:   %s (TLS SPKI sha256 %x, pinned for this session)\n", fs.Arg(0), res.SPKIHash)
		if res.Service != nil {
			writeServiceResult(stdout, sf.url, res)
		}
		if svc.Ready {
			fmt.Fprintf(stdout, "Service: ready (models: %v)\n", svc.Status["models"])
		} else {
			fmt.Fprintf(stdout, "Service: DOWN: %s\n", svc.Error)
		}
		if l := st.line(); l != "" {
			fmt.Fprintln(stdout, l)
		}
		return stateCode(reportCode(emit(stdout, res.Report, false)), st)
	}
	out := struct {
		*verify.Report
		Service *client.Service `json:"service"`
		Result  *serviceJSON    `json:"attestation_service,omitempty"`
		State   *stateCheck     `json:"state,omitempty"`
	}{Report: res.Report, Service: svc}
	if st.State != "" || st.Floor > 0 {
		out.State = &st
	}
	if res.Service != nil {
		out.Result = &serviceJSON{URL: sf.url, Status: res.Service.StatusName(), PolicyID: res.Service.PolicyID, KeyID: res.Service.Claims.KeyID, Expires: res.Service.Claims.Expires.UTC(), Token: res.Service.Token}
	}
	canonjson.Encode(stdout, out)
	return stateCode(reportCode(res.Report.ExitCode()), st)
}

// serviceJSON is the attestation service's signed result in attest --json.
type serviceJSON struct {
	URL      string    `json:"url"`
	Status   string    `json:"ear_status"`
	PolicyID string    `json:"policy_id,omitempty"`
	KeyID    string    `json:"kid"`
	Expires  time.Time `json:"expires"`
	Token    string    `json:"token"`
}

// writeServiceResult states the service's signed verdict; a warning says
// what it rests on.
func writeServiceResult(w io.Writer, url string, res *client.Result) {
	s := res.Service
	fmt.Fprintf(w, "Appraised by: %s: ear.status %s (signature verified with key %s; policy %s; expires %s)\n",
		url, s.StatusName(), s.Claims.KeyID, s.PolicyID, s.Claims.Expires.UTC().Format(time.RFC3339))
	if s.Status == ear.TrustTierWarning {
		why := "a verdict the operator accepted"
		if res.Report.Simulated {
			why = "a simulated TD the service was told to accept"
		}
		fmt.Fprintf(w, "WARNING: the service's verdict is warning, not affirming: %s (%s)\n", why, res.Report.Headline())
	}
}

// reportCode maps a report's exit code for attest: bad evidence from the
// agent is a verdict (not trusted), not a usage error.
func reportCode(code int) int {
	if code == cli.ExitUsage {
		return cli.ExitFail
	}
	return code
}

func cmdQuote(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("quote", "", stderr)
	var pf policyFlags
	pf.add(fs)
	var ef evidenceFlags
	ef.add(fs)
	nonce := fs.String("nonce", "", "the `HEX` nonce the quote must answer")
	spki := fs.String("spki-hash", "", "`HEX` SHA-256 of the TLS SubjectPublicKeyInfo the quote must bind")
	if code, ok := cli.ParseArgs(fs, args, -1); !ok {
		return code
	}
	if err := ef.check(fs); err != nil {
		return usageError(fs, stderr, err)
	}
	opts, refused, err := pf.options()
	if err != nil {
		return inputError("quote", stderr, err)
	}
	if refused != nil {
		return emit(stdout, refused, pf.json)
	}
	ev, err := ef.read()
	if err != nil {
		return inputError("quote", stderr, err)
	}
	if opts.Nonce, err = decodeHexFlag("nonce", *nonce, 0); err != nil {
		return usageError(fs, stderr, err)
	}
	h, err := decodeHexFlag("spki-hash", *spki, 32)
	if err != nil {
		return usageError(fs, stderr, err)
	}
	if h != nil {
		opts.SPKIHash = (*[32]byte)(h)
	}
	r := verify.Verify(ctx, ev, opts)
	addHints(r)
	return emit(stdout, r, pf.json)
}

func cmdProxy(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("proxy", "https://AGENT:PORT", stderr)
	var pf policyFlags
	pf.add(fs)
	var sf serviceFlags
	sf.add(fs)
	listen := fs.String("listen", "127.0.0.1:11434", "local `ADDR` to serve plain HTTP on")
	cfg, code, ok := agentArgs(fs, &pf, &sf, args, stdout, stderr)
	if !ok {
		return code
	}
	pinned, err := client.NewPinned(fs.Arg(0), cfg)
	if err != nil {
		return usageError(fs, stderr, err)
	}
	logger := log.New(stderr, "verifier proxy: ", log.LstdFlags)
	pinned.OnAttest = func(r *client.Result, err error) {
		switch {
		case err != nil:
			logger.Printf("upstream connection refused: %v", err)
		case r.Service != nil:
			logger.Printf("upstream connection attested by %s: ear.status %s, %s (SPKI %x…)", sf.url, r.Service.StatusName(), r.Report.Headline(), r.SPKIHash[:8])
		default:
			logger.Printf("upstream connection attested: %s (SPKI %x…)", r.Report.Headline(), r.SPKIHash[:8])
		}
	}
	// Verify before serving anything.
	first, err := client.Attest(ctx, fs.Arg(0), cfg)
	if err != nil {
		return attestError("proxy", stderr, err)
	}
	addHints(first.Report)
	if first.Service != nil {
		writeServiceResult(stderr, sf.url, first)
	}
	first.Report.WriteText(stderr)
	if !first.Report.Trusted {
		return cli.ExitFail
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return inputError("proxy", stderr, err)
	}
	srv := &http.Server{Handler: client.NewProxy(pinned), ReadHeaderTimeout: 30 * time.Second}
	logger.Printf("serving http://%s -> %s (every upstream connection attested)", ln.Addr(), fs.Arg(0))
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Print(err)
		return cli.ExitFail
	}
	return cli.ExitOK
}

func cmdExplain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("explain", "EVIDENCE.json", stderr)
	ref := fs.String("reference", "", "reference-values `FILE` (a signed DSSE envelope, or plain JSON for dev images)")
	key := fs.String("reference-key", "", "public key `PEM` the reference values must be signed with")
	asJSON := fs.Bool("json", false, "print JSON")
	var accept acceptFlag
	addAccept(fs, &accept)
	if code, ok := cli.ParseArgs(fs, args, -1); !ok {
		return code
	}
	if fs.NArg() != 1 || *ref == "" {
		return usageError(fs, stderr, cli.WithHint(errors.New("want reference values and one saved attestation response"),
			"verifier explain --reference FILE EVIDENCE.json (save one with `verifier attest --save EVIDENCE.json`)"))
	}
	doc, chk, err := loadReference(*ref, *key)
	if err != nil {
		return inputError("explain", stderr, err)
	}
	if doc == nil {
		cli.PrintError(stderr, "verifier explain", errors.New(chk.Reason))
		if h := checkHint(chk.Cause); h != "" {
			fmt.Fprintf(stderr, "verifier explain: hint: %s\n", h)
		}
		return cli.ExitFail
	}
	ev, err := readSaved(fs.Arg(0))
	if err != nil {
		return inputError("explain", stderr, err)
	}
	a, err := verify.Explain(ev, doc)
	if err != nil {
		return inputError("explain", stderr, fmt.Errorf("%s: %v", fs.Arg(0), err))
	}
	unpinned, accepted := verify.SplitUnpinned(a, accept)
	if *asJSON {
		canonjson.Encode(stdout, struct {
			*explain.Analysis
			Unpinned         []string `json:"unpinned,omitempty"`
			AcceptedUnpinned []string `json:"accepted_unpinned,omitempty"`
		}{a, unpinned, accepted})
	} else {
		fmt.Fprintln(stdout, "Note: explain compares values only; it does not check the quote's signature (use attest or quote).")
		if ev.CCELAbsent != "" && len(ev.CCEL) == 0 {
			fmt.Fprintf(stdout, "No CCEL: the agent says: %s\n", ev.CCELAbsent)
		}
		a.WriteText(stdout)
		for _, k := range accepted {
			reg, _ := register.Parse(k)
			fmt.Fprintf(stdout, "%s NOT PINNED (accepted by --accept-unpinned): %s\n", reg.Name(), verify.Unchecked[reg])
		}
		for _, k := range unpinned {
			reg, _ := register.Parse(k)
			fmt.Fprintf(stdout, "%s NOT PINNED: %s; %s\n", reg.Name(), verify.Unchecked[reg], checkHint(verify.ErrUnpinned))
		}
	}
	if a.Failed() || len(unpinned) > 0 {
		return cli.ExitFail
	}
	return cli.ExitOK
}

// readSaved reads a saved /v1/attestation response (`attest --save`) as
// evidence.
func readSaved(path string) (verify.Evidence, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return verify.Evidence{}, err
	}
	var resp attestation.Response
	if err := json.Unmarshal(raw, &resp); err != nil {
		return verify.Evidence{}, cli.WithHint(fmt.Errorf("%s: not a saved /v1/attestation response: %v", path, err), "save one with `verifier attest --save FILE`")
	}
	ev := verify.Evidence{Quote: resp.Quote, CCEL: resp.CCEL, CCELTable: resp.CCELTable, CCELAbsent: resp.CCELAbsent, RuntimeLog: resp.RuntimeLog}
	if resp.ReportData.Nonce != "" {
		ev.Claimed = &resp.ReportData
	}
	return ev, nil
}

// claimedBinding is the nonce and TLS key a saved response says its
// REPORTDATA binds, for record to check; nil, nil when it names none.
func claimedBinding(c *attestation.ReportDataInfo) ([]byte, *[32]byte, error) {
	if c == nil || c.Nonce == "" {
		return nil, nil, nil
	}
	nonce, err := hex.DecodeString(c.Nonce)
	if err != nil || len(nonce) == 0 {
		return nil, nil, fmt.Errorf("report_data.nonce %q: not hex", c.Nonce)
	}
	spki, err := hex.DecodeString(c.SPKIHash)
	if err != nil || len(spki) != 32 {
		return nil, nil, fmt.Errorf("report_data.spki_hash %q: want 64 hex digits", c.SPKIHash)
	}
	return nonce, (*[32]byte)(spki), nil
}

func cmdRecord(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("record", "", stderr)
	var ef evidenceFlags
	ef.add(fs)
	var tf trustFlags
	tf.add(fs)
	fs.Lookup("quote").Usage = "known-good raw TDX quote `FILE`"
	saved := fs.String("evidence", "", "known-good saved attestation response `FILE` (`verifier attest --save`) instead of --quote and the log files")
	out := fs.String("o", "", "output reference-values `FILE`")
	var img refvalues.Image
	fs.StringVar(&img.Name, "name", "recorded", "image `NAME`")
	fs.StringVar(&img.Version, "version", "", "image `VERSION`")
	fs.BoolVar(&img.Dev, "dev", false, "mark the image as a dev image")
	fs.BoolVar(&img.Simulated, "simulated", false, "mark the image as running on the TDX simulator")
	if code, ok := cli.ParseArgs(fs, args, -1); !ok {
		return code
	}
	if *saved != "" && (ef != evidenceFlags{} || fs.NArg() != 0) {
		return usageError(fs, stderr, cli.WithHint(errors.New("--evidence replaces --quote, --ccel, --ccel-table and --event-log"), "give either --evidence FILE or the raw files"))
	}
	if *saved == "" {
		if err := ef.check(fs); err != nil {
			return usageError(fs, stderr, err)
		}
	}
	if *out == "" {
		return usageError(fs, stderr, cli.WithHint(errors.New("no output file given"), "add -o FILE"))
	}
	var ev verify.Evidence
	var err error
	if *saved != "" {
		ev, err = readSaved(*saved)
	} else {
		ev, err = ef.read()
	}
	if err != nil {
		return inputError("record", stderr, err)
	}
	doc, err := record.Reference(ev, img)
	if err != nil {
		return inputError("record", stderr, err)
	}
	// The recording becomes an accepted value for every future TD: only
	// an authentic quote (and, for a saved response, one bound to the
	// nonce and TLS key it names) may be recorded.
	var opts verify.Options
	if err := tf.apply(&opts); err != nil {
		return inputError("record", stderr, err)
	}
	if opts.Nonce, opts.SPKIHash, err = claimedBinding(ev.Claimed); err != nil {
		return inputError("record", stderr, fmt.Errorf("%s: %w", *saved, err))
	}
	r, err := record.Authenticate(ctx, ev, doc, opts)
	if err != nil {
		if h := checkHint(errors.Unwrap(err)); h != "" {
			err = cli.WithHint(err, "%s", h)
		}
		cli.PrintError(stderr, "verifier record", err)
		if code := r.ExitCode(); code == cli.ExitNetwork || code == cli.ExitUsage {
			return code
		}
		return cli.ExitFail
	}
	for _, c := range r.Checks {
		if c.Name == verify.CheckTCB && c.Status == verify.Fail {
			fmt.Fprintf(stderr, "verifier record: warning: %s: %s\n", c.Name, c.Reason)
		}
	}
	b, err := doc.Marshal()
	if err != nil {
		return inputError("record", stderr, err)
	}
	if err := fsutil.WriteFile(*out, b, 0o644); err != nil {
		return inputError("record", stderr, err)
	}
	fmt.Fprintf(stderr, "verifier record: wrote %s (registers of the authenticated quote; %d event lists)\n", *out, len(doc.Events))
	return cli.ExitOK
}

func cmdReference(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const usage = "verifier reference merge --reference REF.json --recorded REC.json --shape NAME [--profile NAME] -o OUT.json"
	if len(args) == 0 || args[0] != "merge" {
		fmt.Fprintln(stderr, "usage: "+usage)
		return cli.ExitUsage
	}
	fs := newFlags("reference merge", "", stderr)
	refPath := fs.String("reference", "", "unsigned reference-values `FILE` whose RTMR0 is null (the builder's output)")
	recPath := fs.String("recorded", "", "`FILE` written by `verifier record` (with --ccel) from the TD on trusted hardware")
	out := fs.String("o", "", "output reference-values `FILE` (may be the --reference file); sign it with `builder sign`")
	var shape reference.Shape
	fs.StringVar(&shape.Name, "shape", "", "`NAME` of the VM shape or host the value was recorded on, e.g. tdx-16G-4cpu; merging the same name again replaces it")
	fs.StringVar(&shape.Platform, "profile", "", "platform profile `NAME` (default: the reference's; must match it)")
	fs.StringVar(&shape.Memory, "memory", "", "memory `SIZE` of the recorded VM (default: the reference image's)")
	fs.IntVar(&shape.CPUs, "cpus", 0, "vCPU `COUNT` of the recorded VM (default: the reference image's)")
	if code, ok := cli.ParseArgs(fs, args[1:], -1); !ok {
		return code
	}
	if fs.NArg() != 0 || *refPath == "" || *recPath == "" || *out == "" || shape.Name == "" {
		return usageError(fs, stderr, cli.WithHint(errors.New("want a reference, a recorded document, a shape name and an output file"), "%s", usage))
	}
	load := func(flag, path string) (*refvalues.Document, error) {
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		if reference.IsEnvelope(raw) {
			return nil, cli.WithHint(fmt.Errorf("%s %s is a signed DSSE envelope", flag, path), "merge into the unsigned reference-values.json, then sign the result again with `builder sign`")
		}
		return refvalues.ReadFile(path)
	}
	ref, err := load("--reference", *refPath)
	if err != nil {
		return inputError("reference merge", stderr, err)
	}
	rec, err := load("--recorded", *recPath)
	if err != nil {
		return inputError("reference merge", stderr, err)
	}
	replaced, err := reference.Merge(ref, rec, shape)
	if err != nil {
		return inputError("reference merge", stderr, fmt.Errorf("%s into %s: %w", *recPath, *refPath, err))
	}
	b, err := ref.Marshal()
	if err != nil {
		return inputError("reference merge", stderr, err)
	}
	if err := fsutil.WriteFile(*out, b, 0o644); err != nil {
		return inputError("reference merge", stderr, err)
	}
	verb := "added"
	if replaced {
		verb = "replaced"
	}
	fmt.Fprintf(stderr, "verifier reference merge: %s accepted RTMR0 value %q (%d in the set); wrote %s: sign it with `builder sign`\n", verb, shape.Name, len(ref.Accepted.RTMR0), *out)
	return cli.ExitOK
}

func cmdCollateral(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "fetch" {
		fmt.Fprintln(stderr, "usage: verifier collateral fetch -o DIR --quote FILE")
		return cli.ExitUsage
	}
	fs := newFlags("collateral fetch", "", stderr)
	out := fs.String("o", "", "output bundle `DIR`")
	quote := fs.String("quote", "", "raw TDX quote `FILE` whose FMSPC needs collateral")
	if code, ok := cli.ParseArgs(fs, args[1:], -1); !ok {
		return code
	}
	if fs.NArg() != 0 || *out == "" || *quote == "" {
		return usageError(fs, stderr, cli.WithHint(errors.New("want an output directory and a quote"), "verifier collateral fetch -o DIR --quote FILE"))
	}
	q, err := os.ReadFile(*quote)
	if err != nil {
		return inputError("collateral fetch", stderr, err)
	}
	verr, err := collateral.Fetch(q, collateral.NewOnline(), *out, time.Now())
	if err != nil {
		cli.PrintError(stderr, "verifier collateral fetch", err)
		if errors.As(err, new(*collateral.NetworkError)) {
			return cli.ExitNetwork
		}
		return cli.ExitUsage
	}
	if verr != nil {
		fmt.Fprintf(stderr, "verifier collateral fetch: note: the quote does not verify with this collateral: %v\n", verr)
	}
	fmt.Fprintf(stderr, "verifier collateral fetch: wrote %s\n", *out)
	return cli.ExitOK
}
