package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/sim"
)

// The simulator root is a certificate only: a pki.json, which holds the
// simulator's private keys, is refused and the error names sim-root.pem.
func TestSimRootIsACertificateOnly(t *testing.T) {
	pki, err := sim.NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(pki)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rootPool(js); err == nil || !strings.Contains(err.Error(), "sim-root.pem") {
		t.Fatalf("pki.json accepted as --sim-root: %v", err)
	}
	if _, err := rootPool([]byte(pki.RootCert)); err != nil {
		t.Fatalf("root certificate refused: %v", err)
	}
}
