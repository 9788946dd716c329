package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/testutil/netutil"
)

// serveProc is a running `verifier serve` (the attestation service or the
// key broker).
type serveProc struct {
	url  string // base URL, scheme and address
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startServe runs the real verifier binary as `verifier serve` with a
// service directory made for it: the reference document ref (unsigned,
// so --dev), the launch's simulator root simRoot, a throwaway
// result-signing key and nonce secret. flags add the listener and the
// role's own settings; the log goes to the artifacts as <test>-role.log.
// The process is killed when the test ends.
func startServe(t testing.TB, role, ref, simRoot string, flags ...string) *serveProc {
	t.Helper()
	dir := t.TempDir()
	refs := filepath.Join(dir, "refs")
	os.Mkdir(refs, 0o755)
	b, err := os.ReadFile(ref)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(refs, "dev.json"), b, 0o644)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(filepath.Join(dir, "result-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
	secret := make([]byte, 32)
	rand.Read(secret)
	os.WriteFile(filepath.Join(dir, "nonce-secret"), secret, 0o600)
	p := &serveProc{log: filepath.Join(artDir, sanitize(t.Name())+"-"+role+".log"), done: make(chan struct{})}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"serve"}, flags...)
	args = append(args, "--reference-dir", refs, "--dev", "--allow-simulated", "--sim-root", simRoot,
		"--signing-key", filepath.Join(dir, "result-key.pem"), "--nonce-secret", filepath.Join(dir, "nonce-secret"))
	p.cmd = exec.Command(filepath.Join(binDir, "verifier"), args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(p.stop)
	return p
}

// waitReady waits up to 20 s for /readyz to answer 200 through c; it
// fails the test, with the log, when the process exits or time runs out.
func (p *serveProc) waitReady(t testing.TB, c *http.Client, what string) {
	t.Helper()
	exited := func() error {
		select {
		case <-p.done:
			return errors.New("exited")
		default:
			return nil
		}
	}
	if err := netutil.WaitOK(c, p.url+"/readyz", 20*time.Second, exited); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, p.text())
	}
}

// stop kills the process, if it still runs, and waits for it.
func (p *serveProc) stop() {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Kill()
		<-p.done
	}
}

// text is the log so far.
func (p *serveProc) text() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}
