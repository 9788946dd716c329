// Package imagedir defines the layout of a build output directory
// (`builder build -o DIR`) and its build.json, read by launch, inspect, diff
// and the tests.
package imagedir

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// File names inside a build output directory.
const (
	Firmware        = "firmware.fd"
	Kernel          = "vmlinuz"
	Initrd          = "initrd.img"
	Cmdline         = "cmdline.txt"
	Disk            = "disk.raw"
	Payloads        = "payloads.json"
	Policy          = "policy.json"
	ReferenceValues = "reference-values.json"
	BuildInfo       = "build.json"
)

// SimRootFile is the simulator root certificate `builder launch --simulate`
// writes next to its --pidfile: each launch makes a fresh simulator PKI,
// which is never a build output (nothing public may derive its keys).
const SimRootFile = "sim-root.pem"

// Info is build.json: what was built, from what, with what.
type Info struct {
	Schema    string            `json:"schema"` // "tdforge.build/v1"
	Image     ImageInfo         `json:"image"`
	VM        VMInfo            `json:"vm"`
	TDX       TDXInfo           `json:"tdx"`
	Kernel    KernelInfo        `json:"kernel"`
	Agent     AgentInfo         `json:"agent"`
	Artifacts map[string]string `json:"artifacts"` // file name -> sha256
	Toolchain map[string]string `json:"toolchain"` // go, gcc, builder
	Inputs    map[string]string `json:"inputs"`    // input key -> sha256
}

// ImageInfo identifies the image.
type ImageInfo struct {
	Name            string `json:"name"`
	Version         string `json:"version"`
	Dev             bool   `json:"dev"`
	SourceDateEpoch int64  `json:"source_date_epoch"`
	Manifest        string `json:"manifest"` // manifest file name
}

// VMInfo is the VM shape the reference values assume.
type VMInfo struct {
	CPUs     int    `json:"cpus"`
	MemoryMB int    `json:"memory_mb"`
	Platform string `json:"platform"`
}

// TDXInfo is the TDX mode.
type TDXInfo struct {
	Simulate bool `json:"simulate"`
	Debug    bool `json:"debug"`
}

// KernelInfo is what the manifest states about the kernel that the
// measurement needs again at launch.
type KernelInfo struct {
	// CCMeasurement is the manifest's kernel.cc_measurement: whether the
	// kernel's EFI stub measures the command line and the initrd into
	// RTMR2; nil = detected from the kernel's version. `builder launch
	// --simulate` measures with it, as the build's reference values did.
	CCMeasurement *bool `json:"cc_measurement,omitempty"`
}

// AgentInfo says which guest ports the agent listens on.
type AgentInfo struct {
	HTTPSPort int `json:"https_port"`
	HTTPPort  int `json:"http_port,omitempty"`
}

// NotBuildError is ReadInfo's error for a directory without a readable
// build.json.
type NotBuildError struct {
	Dir string
	Err error
}

func (e *NotBuildError) Error() string {
	return fmt.Sprintf("%s is not a tdforge build output (no %s): %v", e.Dir, BuildInfo, e.Err)
}

func (e *NotBuildError) Unwrap() error { return e.Err }

// ReadInfo reads DIR/build.json.
func ReadInfo(dir string) (*Info, error) {
	b, err := os.ReadFile(filepath.Join(dir, BuildInfo))
	if err != nil {
		return nil, &NotBuildError{Dir: dir, Err: err}
	}
	var i Info
	if err := json.Unmarshal(b, &i); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, BuildInfo), err)
	}
	if i.Schema != "tdforge.build/v1" {
		return nil, fmt.Errorf("%s: schema %q is not supported", filepath.Join(dir, BuildInfo), i.Schema)
	}
	return &i, nil
}
