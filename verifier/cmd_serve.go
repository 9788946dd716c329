package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/verifier/broker"
	"github.com/tdforge/tdforge/verifier/collateral"
	"github.com/tdforge/tdforge/verifier/nonce"
	"github.com/tdforge/tdforge/verifier/poll"
	"github.com/tdforge/tdforge/verifier/result"
	"github.com/tdforge/tdforge/verifier/service"
	"github.com/tdforge/tdforge/verifier/verify"
)

// serveArgs are the flags of `verifier serve`.
type serveArgs struct {
	cfg                                  service.Config
	listen, tlsCert, tlsKey              string
	insecure                             bool
	simRoot, coll, signingKey, nonceFile string
	collRefresh, nonceTTL, tokenTTL      time.Duration
	reload                               time.Duration
	accept                               acceptFlag
}

// serveFlags is the flag set of `verifier serve` (the deploy manifests'
// arguments are checked against it).
func serveFlags(stderr io.Writer) (*flag.FlagSet, *serveArgs) {
	fs := newFlags("serve", "", stderr)
	a := &serveArgs{}
	cfg := &a.cfg
	fs.StringVar(&a.listen, "listen", "127.0.0.1:8443", "`ADDR` to listen on")
	fs.StringVar(&a.tlsCert, "tls-cert", "", "TLS certificate chain `PEM` (HTTPS, the default)")
	fs.StringVar(&a.tlsKey, "tls-key", "", "TLS private key `PEM`")
	fs.BoolVar(&a.insecure, "insecure-http", false, "serve plain HTTP (tests only; the listen address must be loopback)")
	fs.StringVar(&cfg.ReferenceDir, "reference-dir", "", "`DIR` of reference-values documents (signed DSSE envelopes); evidence matching any one is accepted; a `revoked` file refuses named ones")
	fs.StringVar(&cfg.ReferenceKey, "reference-key", "", "public key `PEM` every reference document must be signed with")
	fs.BoolVar(&cfg.Dev, "dev", false, "accept unsigned reference documents (development only)")
	fs.BoolVar(&cfg.AllowSimulated, "allow-simulated", false, "accept quotes from the TDX simulator (dev references only; needs --sim-root); results are warning, never affirming")
	fs.StringVar(&a.simRoot, "sim-root", "", "simulator root certificate `FILE` (the launch's sim-root.pem)")
	fs.StringVar(&a.coll, "collateral", "", "offline Intel PCS collateral `DIR` (from `verifier collateral fetch`); default: fetch online, cached per FMSPC until nextUpdate")
	fs.DurationVar(&a.collRefresh, "collateral-refresh", collateral.DefaultRefresh, "refetch cached online collateral after this long (also in the last tenth of its validity); the cache is served while the PCS is down")
	addAccept(fs, &a.accept)
	fs.StringVar(&a.signingKey, "signing-key", "", "result-signing key `FILE`: PEM EC P-256 private keys; the first signs, later ones are published in the JWKS ahead of a rotation")
	fs.StringVar(&a.nonceFile, "nonce-secret", "", "nonce HMAC secret `FILE` (at least 32 bytes; the same on every replica)")
	fs.DurationVar(&a.nonceTTL, "nonce-ttl", nonce.DefaultTTL, "how long a nonce is valid (it also bounds a replay across replicas)")
	fs.DurationVar(&a.tokenTTL, "token-ttl", 5*time.Minute, "lifetime of an attestation result token")
	fs.Int64Var(&cfg.MaxBody, "max-body", service.DefaultMaxBody, "request body limit in `BYTES`")
	fs.Func("cors-origin", "web `ORIGIN` (e.g. the agent's web UI, https://agent.example:8443) allowed to call /v1/nonce, /v1/attest and the JWKS from a page; repeatable", func(v string) error { cfg.CORSOrigins = append(cfg.CORSOrigins, v); return service.CheckOrigin(v) })
	fs.StringVar(&cfg.Resources, "resources", "", "key broker resource `DIR` (<repo>/<type>/<tag> files, as `builder build --secrets` writes them): also serve Trustee's KBS protocol under /kbs/v0/")
	fs.DurationVar(&a.reload, "reload-interval", 5*time.Second, "how often the reference directory and signing key file are checked for changes")
	return fs, a
}

// cmdServe runs the attestation service (package service).
func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, a := serveFlags(stderr)
	if code, ok := cli.ParseArgs(fs, args, 0); !ok {
		return code
	}
	cfg := a.cfg
	if err := checkListen(a.listen, a.insecure, a.tlsCert, a.tlsKey); err != nil {
		return usageError(fs, stderr, err)
	}
	for _, f := range []struct{ name, val, hint string }{
		{"reference-dir", cfg.ReferenceDir, "a directory of reference-values documents"},
		{"signing-key", a.signingKey, "create one with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out result-key.pem`"},
		{"nonce-secret", a.nonceFile, "create one with `head -c 32 /dev/urandom > nonce-secret`; give every replica the same"},
	} {
		if f.val == "" {
			return usageError(fs, stderr, cli.WithHint(fmt.Errorf("--%s is required", f.name), "%s", f.hint))
		}
	}
	keys, err := readSigningKeys(a.signingKey)
	if err != nil {
		return inputError("serve", stderr, err)
	}
	if cfg.Keys, err = result.NewKeySet(keys, a.tokenTTL); err != nil {
		return usageError(fs, stderr, fmt.Errorf("--token-ttl: %v", err))
	}
	secret, err := os.ReadFile(a.nonceFile)
	if err != nil {
		return inputError("serve", stderr, fmt.Errorf("--nonce-secret: %v", err))
	}
	if cfg.Nonces, err = nonce.New(secret, a.nonceTTL); err != nil {
		return inputError("serve", stderr, fmt.Errorf("--nonce-secret %s: %v", a.nonceFile, err))
	}
	if a.simRoot != "" {
		var err error
		if cfg.SimRoots, err = readSimRoot(a.simRoot); err != nil {
			return inputError("serve", stderr, err)
		}
	}
	if a.coll != "" {
		b, err := collateral.Open(a.coll)
		if errors.Is(err, os.ErrNotExist) {
			err = cli.WithHint(err, "write one with `verifier collateral fetch -o %s --quote FILE`", a.coll)
		}
		if err != nil {
			return inputError("serve", stderr, err)
		}
		cfg.Collateral = b
	} else {
		if a.collRefresh <= 0 {
			return usageError(fs, stderr, fmt.Errorf("--collateral-refresh %v: want a positive duration, e.g. 12h", a.collRefresh))
		}
		cfg.Cache = collateral.NewCache()
		cfg.Cache.Refresh = a.collRefresh
	}
	cfg.AcceptUnpinned = a.accept
	logger := log.New(stderr, "verifier serve: ", log.LstdFlags)
	cfg.Log = logger
	cfg.VerifierBuild = "tdforge verifier serve"
	svc, err := service.New(cfg)
	if err != nil {
		return inputError("serve", stderr, serveHint(err))
	}

	var tlsCfg *tls.Config
	if !a.insecure {
		cert, err := tls.LoadX509KeyPair(a.tlsCert, a.tlsKey)
		if err != nil {
			return inputError("serve", stderr, fmt.Errorf("--tls-cert/--tls-key: %v", err))
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", a.listen)
	if err != nil {
		return inputError("serve", stderr, err)
	}
	srv := &http.Server{
		Handler: svc.Handler(), TLSConfig: tlsCfg,
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 2 * time.Minute,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: logger,
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go svc.Watch(ctx, a.reload)
	go watchSigningKeys(ctx, a.signingKey, a.reload, cfg.Keys, logger)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	scheme := "https"
	if !a.insecure {
		ln = tls.NewListener(ln, tlsCfg)
	} else {
		scheme = "http"
	}
	logger.Printf("serving %s://%s", scheme, ln.Addr())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Print(err)
		return cli.ExitFail
	}
	return cli.ExitOK
}

// checkListen allows plain HTTP only on a loopback address and requires a
// TLS certificate and key otherwise.
func checkListen(addr string, insecure bool, cert, key string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--listen %q: %v", addr, err)
	}
	if insecure {
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return cli.WithHint(fmt.Errorf("--insecure-http needs a loopback --listen address, not %q", addr), "use --listen 127.0.0.1:PORT, or serve HTTPS with --tls-cert and --tls-key")
		}
		if cert != "" || key != "" {
			return errors.New("--insecure-http and --tls-cert/--tls-key exclude each other")
		}
		return nil
	}
	if cert == "" || key == "" {
		return cli.WithHint(errors.New("HTTPS needs --tls-cert and --tls-key"), "give both (plain HTTP only for tests: --insecure-http on 127.0.0.1)")
	}
	return nil
}

func readSigningKeys(path string) ([]*ecdsa.PrivateKey, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--signing-key: %v", err)
	}
	keys, err := result.ParseSigningKeys(raw)
	if err != nil {
		return nil, fmt.Errorf("--signing-key %s: %v", path, err)
	}
	return keys, nil
}

// watchSigningKeys rotates the key set when the signing key file changes
// (see result.KeySet.Rotate); a file that cannot be read keeps the keys.
func watchSigningKeys(ctx context.Context, path string, every time.Duration, ks *result.KeySet, logger *log.Logger) {
	stamp := func() string {
		fi, err := os.Stat(path)
		if err != nil {
			return ""
		}
		return fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
	}
	last := stamp()
	poll.Every(ctx, every, func() {
		now := stamp()
		if now == last || now == "" {
			return
		}
		last = now
		keys, err := readSigningKeys(path)
		if err == nil {
			err = ks.Rotate(keys)
		}
		if err != nil {
			logger.Printf("signing key: keeping the current keys: %v", err)
			return
		}
		kid, _ := result.KeyID(&keys[0].PublicKey)
		logger.Printf("signing key: now signing with %s", kid)
	})
}

// serveHint adds the flag that fixes a service configuration error.
func serveHint(err error) error {
	switch {
	case errors.Is(err, service.ErrNoReferenceDir):
		return cli.WithHint(err, "add --reference-dir DIR")
	case errors.Is(err, service.ErrNoReferenceKey):
		return cli.WithHint(err, "give --reference-key PEM (or --dev for unsigned dev references)")
	case errors.Is(err, service.ErrBadReferenceKey):
		return cli.WithHint(err, "--reference-key takes the publisher's PEM public key from `builder sign -generate-key`")
	case errors.Is(err, verify.ErrNoSimRoot):
		return cli.WithHint(err, "--allow-simulated needs --sim-root FILE (the sim-root.pem of the launch, next to its --pidfile)")
	case errors.Is(err, broker.ErrNoResourceDir):
		return cli.WithHint(err, "--resources takes the directory `builder build --secrets` writes the resource files into")
	}
	return err
}
