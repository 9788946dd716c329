// Package manifest loads tdforge HCL manifests (schema v1): variables,
// locals, the standard function library and strict blocks, with HCL
// diagnostics (file:line:col and a source snippet) for every error.
//
// These types are the decoded, fully evaluated manifest that the rest of the
// builder consumes. Unknown values (unset variables during `validate`) are
// represented by the Unknown field of Pin-like strings being empty and
// Manifest.Unknown listing the attribute paths.
package manifest

import (
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Manifest is an evaluated manifest.
type Manifest struct {
	Path     string // manifest file path as given
	Dir      string // directory of the manifest; relative file paths resolve here
	Image    Image
	Firmware Firmware
	Kernel   Kernel
	VM       VM
	TDX      TDX
	Agent    Agent
	Payloads []Payload // declaration order
	Services []Service // declaration order
	Volumes  []Volume  // declaration order
	Network  Network
	// KeyBroker releases the keys of encrypted payloads; nil if absent.
	KeyBroker *KeyBroker
	// Unknown lists attributes whose value depends on a variable with no
	// value (allowed only by `builder validate`), e.g. "payload.model.verity_root_hash".
	Unknown []string
	// Variables are the final variable values, rendered as strings, for
	// build info. Sensitive ones are omitted.
	Variables map[string]string
}

// Image is the `image` block.
type Image struct {
	Name            string // ^[a-z][a-z0-9-]*$
	Version         string
	SourceDateEpoch int64 // source_date_epoch
	Dev             bool  // dev = true permits simulate/debug
	ReferenceURL    string
	Range           hcl.Range
}

// Source is one pinned input. Exactly one kind is set.
type Source struct {
	Kind string // "file", "dir", "url", "deb", "go", "ollama_model"

	// file / dir
	Path string // resolved absolute path

	// url
	URL string

	// deb: a Debian package fetched with `apt-get download NAME=VERSION`
	// (or a local .deb File / URL), checked against SHA256 of the .deb.
	Package    string
	DebVersion string
	DebFile    string // local .deb path, alternative to Package
	PathInDeb  string // for firmware/kernel: the file inside the package; for payloads optional subtree
	Arch       string // default amd64

	// go: build Module@Version's main Package reproducibly.
	Module    string
	Version   string
	Sum       string // go.sum h1: hash of the module zip
	GoPackage string // import path of the main package ("." = module root)
	CGO       bool
	Static    bool     // link statically (cgo)
	Ldflags   []string // extra -X etc.
	Tags      []string
	Output    string // path inside the payload, e.g. "bin/ollama"

	// ollama_model
	Model *OllamaModel

	SHA256 string // content pin (file/url/deb: of the fetched bytes); empty for dir/go (see Sum)
	Range  hcl.Range
}

// OllamaModel lays out an Ollama model store.
type OllamaModel struct {
	Name           string         // e.g. "tiny" or "deepseek-r1"
	Tag            string         // e.g. "latest", "7b"
	GGUF           Source         // url/file/deb, or Kind "generate" with Generate set
	Generate       string         // builtin generator, "tiny-llama", when GGUF.Kind == "generate"
	Seed           int64          // generator seed
	Template       string         // template text (inline) ...
	TemplateSource *Source        // ... or a pinned blob
	Params         map[string]any // params JSON (sorted keys when written)
	ParamsSource   *Source        // or a pinned blob
	System         string
	License        *Source
	Range          hcl.Range
}

// Firmware is the `firmware` block: the TDVF (OVMF.fd, unified) image.
type Firmware struct {
	Source Source
	SHA256 string // pin of the extracted firmware file
	Range  hcl.Range
}

// Kernel is the `kernel` block.
type Kernel struct {
	Source  Source   // deb (PathInDeb = "boot/vmlinuz-...") or file/url
	SHA256  string   // pin of the extracted bzImage (optional when the deb is pinned)
	Modules []string // module names; dependencies resolved from modules.dep
	Cmdline string
	// CCMeasurement states whether the kernel's EFI stub measures the
	// command line and the initrd through the EFI CC measurement protocol
	// (into RTMR2); nil = detect from the kernel's version (>= 6.9).
	CCMeasurement *bool
	Range         hcl.Range
}

// VM is the `vm` block.
type VM struct {
	CPUs     int
	MemoryMB int    // memory = "2G" / "2048M"
	Memory   string // as written, normalized e.g. "2G"
	Platform string // platform profile name
	Range    hcl.Range
}

// TDX is the `tdx` block.
type TDX struct {
	Simulate bool
	Debug    bool
	Range    hcl.Range
}

// Agent is the `agent` block.
type Agent struct {
	Listen    string // default ":8443"
	TLS       bool   // default true
	PlainHTTP string // dev only
	Upstream  string // default "http://127.0.0.1:11434"
	WebUI     string // payload name holding the web UI, optional
	WebUIPath string // directory in that payload, default "/"
	// Limits on Ollama request options the agent enforces (0: none).
	MaxNumCtx     int           // largest options.num_ctx
	MaxNumPredict int           // largest options.num_predict / max_tokens
	MaxKeepAlive  time.Duration // longest keep_alive, whole seconds
	// AttestationService is the base URL of an attestation service
	// (`verifier serve`) the web UI's attestation panel asks for a signed
	// verdict; empty: none.
	AttestationService string
	Range              hcl.Range
}

// Network is the `network` block.
type Network struct {
	Mode    string // "none", "dhcp", "static" (default "static" 10.0.2.15/24 via 10.0.2.2)
	Address string
	Gateway string
	Range   hcl.Range
}

// Payload is a `payload "<name>"` block.
type Payload struct {
	Name   string
	Source Source
	// VerityRootHash optionally pins the built payload's root hash (hex).
	// `measure` uses it without building; `build` fails if it differs.
	VerityRootHash string
	// Encryption, if set, encrypts the payload with the key the broker
	// holds as resource Encryption.Key (builder build --secrets).
	Encryption *Encryption
	Range      hcl.Range
}

// Service is a `service "<name>"` block.
type Service struct {
	Name     string
	Payload  string   // payload holding the command ("" = initramfs)
	Payloads []string // extra payloads it needs mounted
	Command  string   // path inside the payload (or initramfs)
	Args     []string
	Env      map[string]string
	User     string
	After    []string
	Restart  string // always (default), on-failure, never
	Range    hcl.Range
}
