// Package testenv lays out what the agent finds in a booted dev TD — boot
// policy, initd's runtime log, the simulator state — in a directory, for
// tests and benchmarks that run the agent outside a guest.
package testenv

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"

	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/tdx/sim"
)

// Env is a laid-out agent environment.
type Env struct {
	Dir        string
	Policy     *policy.Policy
	PolicyPath string
	RuntimeLog string
	SimDir     string
	PKI        *sim.PKI
}

// Setup writes a dev policy (simulated TDX, TLS on, the given upstream), a
// runtime log holding one payload event and the config event, and
// simulator state whose RTMR3 is that log's value.
func Setup(dir, upstream string) (*Env, error) {
	p := &policy.Policy{
		Version: policy.SchemaVersion,
		Image:   policy.Image{Name: "agent-test", Version: "0.0.1", Dev: true, ReferenceURL: "https://example.invalid/reference-values.json"},
		TDX:     policy.TDX{Simulate: true},
		Network: policy.Network{Mode: "none"},
		Agent:   policy.Agent{Listen: "127.0.0.1:0", TLS: true, Upstream: upstream},
	}
	b, err := p.Marshal()
	if err != nil {
		return nil, err
	}
	e := &Env{Dir: dir, Policy: p, PolicyPath: filepath.Join(dir, "policy.json"),
		RuntimeLog: filepath.Join(dir, "runtime-log.cel"), SimDir: filepath.Join(dir, "tdx-sim")}
	if err := os.WriteFile(e.PolicyPath, b, 0o644); err != nil {
		return nil, err
	}
	ce, err := p.ConfigEvent()
	if err != nil {
		return nil, err
	}
	l := event.NewLog()
	var rtmr3 [48]byte
	for _, ev := range []event.Event{
		{Version: event.Version, Kind: event.KindPayload, Name: "model", Alg: event.AlgVerity, Digest: bytes.Repeat([]byte{9}, 32)},
		ce,
	} {
		if err := l.Append(ev, func(m [48]byte) error { rtmr3 = event.Extend(rtmr3, m); return nil }); err != nil {
			return nil, err
		}
	}
	raw, err := l.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(e.RuntimeLog, raw, 0o644); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(e.SimDir, 0o750); err != nil {
		return nil, err
	}
	e.PKI, err = sim.GeneratePKI([]byte("agent testenv seed 0123456789"))
	if err != nil {
		return nil, err
	}
	if err := sim.SavePKI(e.SimDir, e.PKI); err != nil {
		return nil, err
	}
	z := strings.Repeat("00", 48)
	regs := &sim.Registers{Platform: sim.Platform{
		MRTD: strings.Repeat("aa", 48), RTMR: [3]string{z, z, z}, TDAttributes: "0000000000000000",
		XFAM: "e700060000000000", MRSEAM: z, TEETCBSVN: strings.Repeat("00", 16),
	}, RTMR3: hex.EncodeToString(rtmr3[:])}
	if err := sim.SaveRegisters(e.SimDir, regs); err != nil {
		return nil, err
	}
	return e, nil
}

// Args are the agent command-line flags pointing at the environment.
func (e *Env) Args() []string {
	return []string{"-policy", e.PolicyPath, "-runtime-log", e.RuntimeLog,
		"-acpi-tables", filepath.Join(e.Dir, "no-acpi"), "-sim-dir", e.SimDir, "-listen", "127.0.0.1:0"}
}
