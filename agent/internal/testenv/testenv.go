// Package testenv lays out what the agent finds in a booted dev TD — boot
// policy, initd's runtime log, initd's quoting socket over root-only
// simulator state, the CCEL directory initd publishes — in a directory,
// for tests and benchmarks that run the agent outside a guest.
package testenv

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"

	"github.com/tdforge/tdforge/initd/quoted"
	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/tdx/quote"
	"github.com/tdforge/tdforge/internal/tdx/sim"
)

// Env is a laid-out agent environment.
type Env struct {
	Dir        string
	Policy     *policy.Policy
	PolicyPath string
	RuntimeLog string
	SimDir     string // root-only (0700) simulator state behind the socket
	Socket     string // initd's quoting socket (initd/quoted), served in-process
	ACPI       string // the CCEL directory initd publishes
	PKI        *sim.PKI
}

// Setup writes a dev policy (simulated TDX, TLS on, the given upstream), a
// runtime log holding one payload event and the config event, and
// simulator state whose RTMR3 is that log's value, quoted by initd's
// quoting server on Socket (for this process's uid, until the process
// exits), and a CCEL directory saying there is no CCEL.
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
		RuntimeLog: filepath.Join(dir, "runtime-log.cel"), SimDir: filepath.Join(dir, "tdx-sim"),
		Socket: filepath.Join(dir, "quote.sock"), ACPI: filepath.Join(dir, "acpi")}
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
	if err := os.MkdirAll(e.SimDir, 0o700); err != nil {
		return nil, err
	}
	e.PKI, err = sim.NewPKI()
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
	if _, err := quoted.PublishCCEL(e.ACPI, os.Getgid(), quoted.ACPISource(filepath.Join(dir, "no-acpi"))); err != nil {
		return nil, err
	}
	prov, err := quote.OpenSimulator(e.SimDir)
	if err != nil {
		return nil, err
	}
	ln, err := quoted.Listen(e.Socket, os.Getgid())
	if err != nil {
		return nil, err
	}
	go (&quoted.Server{Provider: prov, UID: os.Getuid()}).Serve(ln)
	return e, nil
}

// Args are the agent command-line flags pointing at the environment.
func (e *Env) Args() []string {
	return []string{"-policy", e.PolicyPath, "-runtime-log", e.RuntimeLog,
		"-acpi-tables", e.ACPI, "-quote-socket", e.Socket, "-listen", "127.0.0.1:0"}
}
