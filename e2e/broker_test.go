package e2e

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

// brokerAddr is where the dev image's key broker (manifests/dev.hcl:
// https://10.0.2.2:8444) is on the host: QEMU user networking maps
// 10.0.2.2 to the host's loopback.
const brokerAddr = "127.0.0.1:8444"

// current is the running broker: the port is fixed, so a new boot's broker
// replaces the last one (whose TD already has its key).
var current *serveProc

// startBroker starts the real `verifier serve --resources` as the dev key
// broker for a launch whose simulator root is simRoot, appraising against
// the reference document ref: the dev secret, the dev TLS files (which the
// image pins).
func startBroker(t testing.TB, simRoot, ref string) *serveProc {
	t.Helper()
	if current != nil {
		current.stop()
	}
	// The port is fixed: a broker left by another run would answer this TD.
	if c, err := net.DialTimeout("tcp", brokerAddr, time.Second); err == nil {
		c.Close()
		t.Fatalf("something already listens on %s (another e2e or make demo run?): stop it and run again", brokerAddr)
	}
	p := startServe(t, "broker", ref, simRoot, "--listen", brokerAddr,
		"--tls-cert", filepath.Join(repoRoot, "deploy", "dev-broker", "tls.crt"), "--tls-key", filepath.Join(repoRoot, "deploy", "dev-broker", "tls.key"),
		"--resources", filepath.Join(repoRoot, "manifests", "dev-secrets"))
	current = p
	t.Cleanup(func() {
		if current == p {
			current = nil
		}
	})
	p.url = "https://" + brokerAddr
	p.waitReady(t, insecureClient(2*time.Second), "key broker")
	return p
}
