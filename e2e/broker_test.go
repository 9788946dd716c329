package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// brokerAddr is where the dev image's key broker (manifests/dev.hcl:
// https://10.0.2.2:8444) is on the host: QEMU user networking maps
// 10.0.2.2 to the host's loopback.
const brokerAddr = "127.0.0.1:8444"

// brokerProc is the real `verifier serve --resources` as the dev key
// broker: the dev secret, the dev TLS files (which the image pins), one
// reference document and the launch's simulator root.
type brokerProc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// current is the running broker: the port is fixed, so a new boot's broker
// replaces the last one (whose TD already has its key).
var current *brokerProc

// startBroker starts the dev key broker for a launch whose simulator root
// is simRoot, appraising against the reference document ref.
func startBroker(t testing.TB, simRoot, ref string) *brokerProc {
	t.Helper()
	if current != nil {
		current.stop()
	}
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
	p := &brokerProc{log: filepath.Join(artDir, sanitize(t.Name())+"-broker.log"), done: make(chan struct{})}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(filepath.Join(binDir, "verifier"), "serve", "--listen", brokerAddr,
		"--tls-cert", filepath.Join(repoRoot, "deploy", "dev-broker", "tls.crt"), "--tls-key", filepath.Join(repoRoot, "deploy", "dev-broker", "tls.key"),
		"--resources", filepath.Join(repoRoot, "manifests", "dev-secrets"),
		"--reference-dir", refs, "--dev", "--allow-simulated", "--sim-root", simRoot,
		"--signing-key", filepath.Join(dir, "result-key.pem"), "--nonce-secret", filepath.Join(dir, "nonce-secret"))
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); logf.Close(); close(p.done) }()
	current = p
	t.Cleanup(p.stop)
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		resp, err := c.Get("https://" + brokerAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("key broker exited:\n%s", p.text())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("key broker not ready: %v\n%s", err, p.text())
		}
	}
}

func (p *brokerProc) stop() {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Kill()
		<-p.done
	}
	if current == p {
		current = nil
	}
}

// text is the broker's log so far.
func (p *brokerProc) text() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}
