package testdeps

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
)

// OVMFSHA256 is the SHA-256 of usr/share/ovmf/OVMF.fd in the pinned OVMF
// package.
const OVMFSHA256 = "7b456907dd0786d415999e801a1ac4637b8ed4d7cf5378cfc6edbe5e574dd773"

// FirmwareHCL returns a manifest firmware block that takes OVMF.fd from
// the pinned OVMF package. It fails the test when the package is missing.
func FirmwareHCL(t testing.TB) string {
	t.Helper()
	return "firmware {\n" + DebHCL(t, OVMFDeb(t), "usr/share/ovmf/OVMF.fd") +
		"  sha256 = \"" + OVMFSHA256 + "\"\n}\n"
}

// DebHCL returns a manifest deb block, indented to sit in a firmware or
// kernel block, that takes path from the package file deb and pins the
// package by its SHA-256.
func DebHCL(t testing.TB, deb, path string) string {
	t.Helper()
	b, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return fmt.Sprintf("  deb {\n    file   = %q\n    sha256 = %q\n    path   = %q\n  }\n", deb, hex.EncodeToString(sum[:]), path)
}
