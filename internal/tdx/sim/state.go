// This file is the on-disk contract of the TDX simulator, shared by
// `builder launch --simulate` (which hands the simulated platform to the
// guest through QEMU fw_cfg) and initd (which owns and extends the
// registers and quotes them for the agent over its quoting socket,
// initd/quoted). It is used only when the boot policy says tdx.simulate
// (dev images).

package sim

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tdforge/tdforge/internal/canonjson"

	"github.com/tdforge/tdforge/internal/fsutil"
)

// Dir is the guest directory holding the simulator state. initd creates it
// 0700 root:root (files 0600): it holds the simulator's private keys, so no
// service may read it, and initd is its only reader and writer.
const Dir = "/run/tdforge/tdx-sim"

// fw_cfg entry names `builder launch --simulate` passes to QEMU
// (-fw_cfg name=opt/tdforge/...,file=...). The guest reads them from
// /sys/firmware/qemu_fw_cfg/by_name/<name>/raw.
const (
	FWCfgPlatform = "opt/tdforge/platform.json"  // Platform below
	FWCfgCCEL     = "opt/tdforge/ccel.bin"       // simulated firmware event log (TCG2 crypto-agile, SHA-384)
	FWCfgCCELACPI = "opt/tdforge/ccel-table.bin" // simulated 56-byte CCEL ACPI table
	FWCfgPKI      = "opt/tdforge/sim-pki.json"   // PKI below
)

// File names inside Dir.
const (
	RegistersFile = "registers.json" // Registers
	PKIFile       = "pki.json"       // PKI
	CCELFile      = "ccel.bin"
	CCELTableFile = "ccel-table.bin"
)

// Platform is what the simulated TDX module and firmware measured before the
// kernel ran: computed by the builder's measurement code from the exact
// files handed to QEMU.
type Platform struct {
	MRTD         string    `json:"mrtd"`          // hex, 48 bytes
	RTMR         [3]string `json:"rtmr"`          // RTMR0..2 hex at kernel entry
	TDAttributes string    `json:"td_attributes"` // hex, 8 bytes
	XFAM         string    `json:"xfam"`          // hex, 8 bytes
	MRSEAM       string    `json:"mrseam"`        // hex, 48 bytes
	TEETCBSVN    string    `json:"tee_tcb_svn"`   // hex, 16 bytes
}

// Registers is the live simulated register file.
type Registers struct {
	Platform
	RTMR3 string `json:"rtmr3"` // hex, 48 bytes
}

// PlainRegisters is the register file of a plain simulated dev TD (for
// tests: internal/testutil/simtd, tsmtest): MRTD is the byte mrtd and
// RTMR0 the byte rtmr0, each repeated 48 times; RTMR1 to RTMR3, MRSEAM and
// TEE_TCB_SVN are zero; the TD attributes set SEPT_VE_DISABLE only and
// XFAM is that of a current Xeon.
func PlainRegisters(mrtd, rtmr0 byte) *Registers {
	rep := func(b byte, n int) string { return strings.Repeat(hex.EncodeToString([]byte{b}), n) }
	z := rep(0, 48)
	return &Registers{Platform: Platform{MRTD: rep(mrtd, 48), RTMR: [3]string{rep(rtmr0, 48), z, z},
		TDAttributes: "0000001000000000", XFAM: "e71a060000000000", MRSEAM: z, TEETCBSVN: rep(0, 16)}, RTMR3: z}
}

// PKI is the simulator's attestation identity: a root CA, an intermediate
// and a PCK leaf (PEM), and the attestation key (PKCS#8 PEM) that signs
// quotes. `builder launch --simulate` makes a fresh one per launch (NewPKI)
// and publishes only its root certificate (sim-root.pem).
type PKI struct {
	RootCert         string `json:"root_cert"`
	IntermediateCert string `json:"intermediate_cert"`
	PCKCert          string `json:"pck_cert"`
	PCKKey           string `json:"pck_key"`
	AttestationKey   string `json:"attestation_key"`
}

// Decode48 decodes a 48-byte hex register.
func Decode48(s string) ([48]byte, error) {
	var r [48]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 48 {
		return r, fmt.Errorf("simulator: register %q is not 96 hex digits", s)
	}
	copy(r[:], b)
	return r, nil
}

// LoadRegisters reads dir/registers.json.
func LoadRegisters(dir string) (*Registers, error) {
	var r Registers
	if err := readJSON(filepath.Join(dir, RegistersFile), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// SaveRegisters atomically writes dir/registers.json (0600).
func SaveRegisters(dir string, r *Registers) error {
	return writeJSON(filepath.Join(dir, RegistersFile), r, 0o600)
}

// LoadPKI reads dir/pki.json.
func LoadPKI(dir string) (*PKI, error) {
	var p PKI
	if err := readJSON(filepath.Join(dir, PKIFile), &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// SavePKI atomically writes dir/pki.json (0600: it holds private keys).
func SavePKI(dir string, p *PKI) error { return writeJSON(filepath.Join(dir, PKIFile), p, 0o600) }

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("simulator state: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("simulator state %s: %w", path, err)
	}
	return nil
}

func writeJSON(path string, v any, perm os.FileMode) error {
	b, err := canonjson.Marshal(v)
	if err != nil {
		return err
	}
	return fsutil.WriteFile(path, b, perm)
}
