package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/verifier/client"
	"github.com/tdforge/tdforge/verifier/collateral"
	"github.com/tdforge/tdforge/verifier/reference"
	"github.com/tdforge/tdforge/verifier/verify"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func newFlags(name, args string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: verifier %s [flags] %s\n", name, args)
		fs.PrintDefaults()
	}
	return fs
}

func optionsError(cmd string, err error) int { return inputError(cmd, err) }

func init() {
	register(&command{name: "attest", summary: "attest a running agent over TLS and print the verdict", run: cmdAttest})
	register(&command{name: "quote", summary: "verify a saved quote and event logs offline", run: cmdQuote})
	register(&command{name: "proxy", summary: "local attested proxy for Ollama/OpenAI clients", run: cmdProxy})
	register(&command{name: "explain", summary: "print the register and event diff of a saved attestation", run: cmdExplain})
	register(&command{name: "record", summary: "write reference values pinned to a known-good quote", run: cmdRecord})
	register(&command{name: "collateral", summary: "collateral fetch: write an offline Intel PCS collateral bundle", run: cmdCollateral})
}

func cmdAttest(ctx context.Context, args []string) int {
	fs := newFlags("attest", "https://AGENT:PORT")
	var pf policyFlags
	pf.add(fs)
	save := fs.String("save", "", "also save the attestation response (evidence) to `FILE` for `verifier explain`")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		return usageError(fs, "want exactly one agent URL")
	}
	if _, err := client.ParseURL(fs.Arg(0)); err != nil {
		return usageError(fs, "%v", err)
	}
	opts, refused, err := pf.options()
	if err != nil {
		return optionsError("attest", err)
	}
	if refused != nil {
		return emit(os.Stdout, refused, pf.json)
	}
	res, err := client.Attest(ctx, fs.Arg(0), client.Config{Options: opts})
	if err != nil {
		fmt.Fprintf(os.Stderr, "verifier attest: %v\n", err)
		if errors.As(err, new(*client.NetworkError)) {
			return 3
		}
		return 1
	}
	if *save != "" {
		b, _ := json.MarshalIndent(res.Response, "", "  ")
		if err := fsutil.WriteFile(*save, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "verifier attest: %v\n", err)
		}
	}
	// The service's own readiness, over the pinned key: information next to
	// the verdict (a measured TD can still have a service down).
	svc, serr := client.ServiceStatus(ctx, fs.Arg(0), res.SPKIHash)
	if serr != nil {
		svc = &client.Service{Error: serr.Error()}
	}
	if !pf.json {
		fmt.Printf("Agent:   %s (TLS SPKI sha256 %x, pinned for this session)\n", fs.Arg(0), res.SPKIHash)
		if svc.Ready {
			fmt.Printf("Service: ready (models: %v)\n", svc.Status["models"])
		} else {
			fmt.Printf("Service: DOWN: %s\n", svc.Error)
		}
		return reportCode(emit(os.Stdout, res.Report, false))
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	enc.Encode(struct {
		*verify.Report
		Service *client.Service `json:"service"`
	}{res.Report, svc})
	return reportCode(res.Report.ExitCode())
}

// reportCode maps a report's exit code for attest: bad evidence from the
// agent is a verdict (1), not a usage error.
func reportCode(code int) int {
	if code == 2 {
		return 1
	}
	return code
}

func cmdQuote(ctx context.Context, args []string) int {
	fs := newFlags("quote", "")
	var pf policyFlags
	pf.add(fs)
	quote := fs.String("quote", "", "raw TDX quote `FILE`")
	ccel := fs.String("ccel", "", "firmware event log `FILE` (CCEL data)")
	table := fs.String("ccel-table", "", "CCEL ACPI table `FILE`")
	evlog := fs.String("event-log", "", "runtime RTMR3 event log `FILE` (CEL)")
	nonce := fs.String("nonce", "", "the `HEX` nonce the quote must answer")
	spki := fs.String("spki-hash", "", "`HEX` SHA-256 of the TLS SubjectPublicKeyInfo the quote must bind")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 || *quote == "" {
		return usageError(fs, "--quote FILE is required and no arguments are taken")
	}
	opts, refused, err := pf.options()
	if err != nil {
		return optionsError("quote", err)
	}
	if refused != nil {
		return emit(os.Stdout, refused, pf.json)
	}
	var ev verify.Evidence
	for _, f := range []struct {
		path string
		dst  *[]byte
	}{{*quote, &ev.Quote}, {*ccel, &ev.CCEL}, {*table, &ev.CCELTable}, {*evlog, &ev.RuntimeLog}} {
		if *f.dst, err = readOptional(f.path); err != nil {
			return inputError("quote", err)
		}
	}
	if opts.Nonce, err = decodeHexFlag("nonce", *nonce, 0); err != nil {
		return usageError(fs, "%v", err)
	}
	h, err := decodeHexFlag("spki-hash", *spki, 32)
	if err != nil {
		return usageError(fs, "%v", err)
	}
	if h != nil {
		opts.SPKIHash = (*[32]byte)(h)
	}
	return emit(os.Stdout, verify.Verify(ctx, ev, opts), pf.json)
}

func cmdProxy(ctx context.Context, args []string) int {
	fs := newFlags("proxy", "https://AGENT:PORT")
	var pf policyFlags
	pf.add(fs)
	listen := fs.String("listen", "127.0.0.1:11434", "local `ADDR` to serve plain HTTP on")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		return usageError(fs, "want exactly one agent URL")
	}
	opts, refused, err := pf.options()
	if err != nil {
		return optionsError("proxy", err)
	}
	if refused != nil {
		return emit(os.Stdout, refused, pf.json)
	}
	pinned, err := client.NewPinned(fs.Arg(0), client.Config{Options: opts})
	if err != nil {
		return usageError(fs, "%v", err)
	}
	logger := log.New(os.Stderr, "verifier proxy: ", log.LstdFlags)
	pinned.OnAttest = func(r *client.Result, err error) {
		switch {
		case err != nil:
			logger.Printf("upstream connection refused: %v", err)
		default:
			logger.Printf("upstream connection attested: %s (SPKI %x…)", r.Report.Verdict, r.SPKIHash[:8])
		}
	}
	// Verify before serving anything.
	first, err := client.Attest(ctx, fs.Arg(0), client.Config{Options: opts})
	if err != nil {
		fmt.Fprintf(os.Stderr, "verifier proxy: %v\n", err)
		if errors.As(err, new(*client.NetworkError)) {
			return 3
		}
		return 1
	}
	if !first.Report.Trusted {
		first.Report.WriteText(os.Stderr)
		return 1
	}
	first.Report.WriteText(os.Stderr)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return inputError("proxy", err)
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
		return 1
	}
	return 0
}

func cmdExplain(ctx context.Context, args []string) int {
	fs := newFlags("explain", "EVIDENCE.json")
	ref := fs.String("reference", "", "reference-values `FILE`")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 || *ref == "" {
		return usageError(fs, "want --reference FILE and one saved attestation response")
	}
	doc, _, err := reference.Load(*ref, "")
	if err != nil {
		return inputError("explain", err)
	}
	raw, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return inputError("explain", err)
	}
	var resp attestation.Response
	if err := json.Unmarshal(raw, &resp); err != nil {
		return inputError("explain", fmt.Errorf("%s: not a saved /v1/attestation response: %v", fs.Arg(0), err))
	}
	a, err := verify.Explain(verify.Evidence{Quote: resp.Quote, CCEL: resp.CCEL, CCELTable: resp.CCELTable, RuntimeLog: resp.RuntimeLog}, doc)
	if err != nil {
		return inputError("explain", fmt.Errorf("%s: %v", fs.Arg(0), err))
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(a)
	} else {
		fmt.Println("Note: explain compares values only; it does not check the quote's signature (use attest or quote).")
		a.WriteText(os.Stdout)
	}
	if a.Failed() {
		return 1
	}
	return 0
}

func cmdRecord(ctx context.Context, args []string) int {
	fs := newFlags("record", "")
	quote := fs.String("quote", "", "known-good raw TDX quote `FILE`")
	ccel := fs.String("ccel", "", "firmware event log `FILE` (CCEL data)")
	table := fs.String("ccel-table", "", "CCEL ACPI table `FILE`")
	evlog := fs.String("event-log", "", "runtime RTMR3 event log `FILE` (CEL)")
	out := fs.String("o", "", "output reference-values `FILE`")
	var img refvalues.Image
	fs.StringVar(&img.Name, "name", "recorded", "image `NAME`")
	fs.StringVar(&img.Version, "version", "", "image `VERSION`")
	fs.BoolVar(&img.Dev, "dev", false, "mark the image as a dev image")
	fs.BoolVar(&img.Simulated, "simulated", false, "mark the image as running on the TDX simulator")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 || *quote == "" || *out == "" {
		return usageError(fs, "--quote FILE and -o FILE are required")
	}
	var ev verify.Evidence
	var err error
	for _, f := range []struct {
		path string
		dst  *[]byte
	}{{*quote, &ev.Quote}, {*ccel, &ev.CCEL}, {*table, &ev.CCELTable}, {*evlog, &ev.RuntimeLog}} {
		if *f.dst, err = readOptional(f.path); err != nil {
			return inputError("record", err)
		}
	}
	doc, err := verify.Record(ev, img)
	if err != nil {
		return inputError("record", err)
	}
	b, err := doc.Marshal()
	if err != nil {
		return inputError("record", err)
	}
	if err := fsutil.WriteFile(*out, b, 0o644); err != nil {
		return inputError("record", err)
	}
	fmt.Fprintf(os.Stderr, "verifier record: wrote %s (registers of the quote; %d event lists)\n", *out, len(doc.Events))
	return 0
}

func cmdCollateral(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] != "fetch" {
		fmt.Fprintln(os.Stderr, "usage: verifier collateral fetch -o DIR --quote FILE")
		return 2
	}
	fs := newFlags("collateral fetch", "")
	out := fs.String("o", "", "output bundle `DIR`")
	quote := fs.String("quote", "", "raw TDX quote `FILE` whose FMSPC needs collateral")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() != 0 || *out == "" || *quote == "" {
		return usageError(fs, "-o DIR and --quote FILE are required")
	}
	q, err := os.ReadFile(*quote)
	if err != nil {
		return inputError("collateral fetch", err)
	}
	verr, err := collateral.Fetch(q, collateral.NewOnline(), *out, time.Now())
	if err != nil {
		fmt.Fprintf(os.Stderr, "verifier collateral fetch: %v\n", err)
		if errors.As(err, new(*collateral.NetworkError)) {
			return 3
		}
		return 2
	}
	if verr != nil {
		fmt.Fprintf(os.Stderr, "verifier collateral fetch: note: the quote does not verify with this collateral: %v\n", verr)
	}
	fmt.Fprintf(os.Stderr, "verifier collateral fetch: wrote %s\n", *out)
	return 0
}
