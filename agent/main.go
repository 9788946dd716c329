// Command agent runs inside the TD: it serves TDX quotes bound to a client
// nonce and to its own TLS key (RA-TLS), the boot event logs, the web UI,
// and proxies chat to the measured Ollama.
//
// Usage: agent [-policy /etc/tdforge/policy.json] [flags]
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/tdforge/tdforge/agent/ratls"
	"github.com/tdforge/tdforge/agent/server"
	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/guest/volstatus"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/tdx/quote"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

type options struct {
	policyPath, runtimeLog, acpiTables, quoteSocket string
	listen, plain, volumeStatus                     string
}

// run is the whole program: it serves until SIGTERM or SIGINT and returns
// the exit code (cli.ExitOK, cli.ExitFail when serving failed,
// cli.ExitUsage for a bad command line). The listening lines go to stdout,
// the log to stderr.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.policyPath, "policy", policy.Path, "boot policy")
	fs.StringVar(&o.runtimeLog, "runtime-log", server.DefaultRuntimeLog, "RTMR3 runtime event log (CEL) written by initd")
	fs.StringVar(&o.acpiTables, "acpi-tables", server.DefaultACPITables, "directory holding CCEL and data/CCEL, or "+server.CCELAbsentFile+" (initd's copy of the firmware's)")
	fs.StringVar(&o.quoteSocket, "quote-socket", quote.DefaultSocket, "initd's quoting socket (the agent never opens a quote backend itself)")
	fs.StringVar(&o.volumeStatus, "volume-status", volstatus.Dir, "directory of initd's sealed-volume status files")
	fs.StringVar(&o.listen, "listen", "", "override policy agent.listen (tests)")
	fs.StringVar(&o.plain, "plain-http", "", "override policy agent.plain_http (tests; dev images only)")
	if err := fs.Parse(args); err != nil {
		return cli.ExitUsage
	}
	if fs.NArg() != 0 {
		cli.PrintError(stderr, "agent", cli.WithHint(fmt.Errorf("unexpected arguments %q", fs.Args()), "the agent takes flags only; its configuration is the boot policy (-policy FILE)"))
		return cli.ExitUsage
	}
	logger := log.New(stderr, "agent: ", log.LstdFlags|log.LUTC)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, o, stdout, logger); err != nil {
		logger.Print(err)
		for _, h := range cli.Hints(err) {
			logger.Print("hint: ", h)
		}
		return cli.ExitFail
	}
	return cli.ExitOK
}

func loadPolicy(path string) (*policy.Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("boot policy: %w", err)
	}
	defer f.Close()
	return policy.Decode(f)
}

// webUIDir resolves the web UI directory from the policy ("" when none).
func webUIDir(p *policy.Policy) (string, error) {
	if p.Agent.WebUIPayload == "" {
		return "", nil
	}
	i := slices.IndexFunc(p.Payloads, func(pl policy.Payload) bool { return pl.Name == p.Agent.WebUIPayload })
	if i >= 0 {
		return filepath.Join(p.Payloads[i].MountPoint, filepath.FromSlash(p.Agent.WebUIPath)), nil
	}
	return "", fmt.Errorf("boot policy: agent webui_payload %q is not a payload", p.Agent.WebUIPayload)
}

func serve(ctx context.Context, o options, stdout io.Writer, logger *log.Logger) error {
	p, err := loadPolicy(o.policyPath)
	if err != nil {
		return err
	}
	if o.listen != "" {
		p.Agent.Listen = o.listen
	}
	if o.plain != "" {
		if !p.Image.Dev {
			return errors.New("-plain-http is allowed only for dev images")
		}
		p.Agent.PlainHTTP = o.plain
	}
	if p.Agent.Listen == "" {
		return errors.New("boot policy: agent listen is empty; set it to an address such as :8443")
	}
	// Quoting is root's (configfs-tsm, /dev/tdx_guest and the simulator's
	// keys are root-only): initd quotes for us and names its backend.
	prov, err := quote.OpenSocket(o.quoteSocket)
	if err != nil {
		return cli.WithHint(err, "the agent quotes through initd; run it as the policy's agent service in a tdforge guest")
	}
	if got := prov.Name() == quote.NameSimulator; got != p.TDX.Simulate {
		return fmt.Errorf("initd quotes with %s but the boot policy says tdx.simulate = %v", prov.Name(), p.TDX.Simulate)
	}
	up, err := url.Parse(p.Agent.Upstream)
	if err != nil || (up.Scheme != "http" && up.Scheme != "https") || up.Host == "" {
		return fmt.Errorf("boot policy: agent upstream %q must be an http(s) URL such as http://127.0.0.1:11434", p.Agent.Upstream)
	}
	ui, err := webUIDir(p)
	if err != nil {
		return err
	}
	key, err := ratls.NewKey()
	if err != nil {
		return err
	}
	ev := server.Evidence{RuntimeLog: o.runtimeLog, ACPITables: o.acpiTables}
	logs, err := ev.Read()
	if err != nil {
		return err
	}
	var hist server.History
	if v := p.AgentVolume(); v != nil {
		hist = server.History{Volume: v.Name, Dir: v.Mount, StatusDir: o.volumeStatus, RequireMount: true}
	}
	srv, err := server.New(server.Config{
		Policy: p, Provider: prov, SPKIHash: key.SPKIHash, Evidence: ev,
		Upstream: up, WebUIDir: ui, History: hist, Log: logger,
	})
	if err != nil {
		return err
	}
	defer srv.Close()

	var servers []*http.Server
	errc := make(chan error, 2)
	start := func(addr string, tlsCfg *tls.Config) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", addr, err)
		}
		ln = server.LimitListener(ln, server.MaxConns)
		hs := server.HTTPServer(srv, logger)
		hs.TLSConfig = tlsCfg
		servers = append(servers, hs)
		scheme := "http"
		if tlsCfg != nil {
			scheme = "https"
		}
		// Tests and operators read this line to find the bound address.
		fmt.Fprintf(stdout, "tdforge-agent listening %s://%s provider=%s\n", scheme, ln.Addr(), prov.Name())
		go func() {
			var err error
			if tlsCfg != nil {
				err = hs.ServeTLS(ln, "", "")
			} else {
				err = hs.Serve(ln)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
		return nil
	}
	if p.Agent.TLS {
		cert, _, err := ratls.NewCertificate(key, prov.Attest, ratls.Logs{RuntimeLog: logs.RuntimeLog, CCEL: logs.CCEL, CCELTable: logs.CCELTable}, ratls.Options{})
		if err != nil {
			return err
		}
		if err := start(p.Agent.Listen, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}); err != nil {
			return err
		}
	} else if err := start(p.Agent.Listen, nil); err != nil {
		return err
	}
	if p.Agent.PlainHTTP != "" {
		if err := start(p.Agent.PlainHTTP, nil); err != nil {
			return err
		}
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, hs := range servers {
		_ = hs.Shutdown(sctx)
	}
	return nil
}
