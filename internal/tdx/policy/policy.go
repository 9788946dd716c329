// Package policy defines the boot policy: the canonical JSON file the builder
// writes into the initramfs (and so into RTMR2) and initd obeys. It binds
// every payload root hash, service, agent setting and the TDX mode.
//
// Decoding is strict: unknown fields, missing required fields and
// inconsistent references are errors.
package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"regexp"
	"sort"
	"strings"

	"github.com/tdforge/tdforge/internal/canonjson"
	"github.com/tdforge/tdforge/internal/image/hashtree"
	"github.com/tdforge/tdforge/internal/inputs/secret"
	"github.com/tdforge/tdforge/internal/tdx/event"
)

// Path is where the policy lives inside the initramfs.
const Path = "/etc/tdforge/policy.json"

// SchemaVersion is the policy schema this package reads and writes.
const SchemaVersion = 1

// Policy is the boot policy.
type Policy struct {
	Version  int       `json:"version"`
	Image    Image     `json:"image"`
	TDX      TDX       `json:"tdx"`
	Kernel   Kernel    `json:"kernel"`
	Disk     Disk      `json:"disk"`
	Payloads []Payload `json:"payloads"`
	Network  Network   `json:"network"`
	Services []Service `json:"services"`
	Agent    Agent     `json:"agent"`
	// Volumes are the sealed writable volumes (omitted when none, so
	// images without volumes keep their policy bytes).
	Volumes []Volume `json:"volumes,omitempty"`
	// KeyBroker is where initd obtains the keys of encrypted payloads;
	// nil when no payload is encrypted.
	KeyBroker *KeyBroker `json:"key_broker,omitempty"`
}

// KeyBroker is the key broker service (Trustee's KBS protocol, RCAR) that
// releases payload keys to an attested TD. Being in the policy, both fields
// are measured into RTMR2.
type KeyBroker struct {
	URL string `json:"url"` // https://host:port, as the guest reaches it
	// CASHA256 is the hex SHA-256 of the DER of the broker's TLS
	// certificate or of a CA certificate in its chain; initd accepts only a
	// chain holding a certificate with this digest.
	CASHA256 string `json:"ca_sha256"`
}

// Encryption says a payload's data area is dm-crypt ciphertext (no header)
// and how to open it: the verity device over the partition verifies the
// ciphertext, and a dm-crypt target over the verity device decrypts it
// with the key the broker releases as Resource. The builder fills it with
// crypt.Params; crypt.Table turns it into the dm-crypt table.
type Encryption struct {
	Cipher     string `json:"cipher"`      // EncryptionCipher
	KeyBits    int    `json:"key_bits"`    // EncryptionKeyBits
	SectorSize int    `json:"sector_size"` // EncryptionSectorSize
	// IVLargeSectors: the plain64 IV counts SectorSize-byte sectors, not
	// 512-byte ones (dm-crypt's iv_large_sectors option). Always true.
	IVLargeSectors bool   `json:"iv_large_sectors"`
	Resource       string `json:"resource"` // key-broker resource id <repo>/<type>/<tag>
}

// The only supported encryption. The key size is secret.KeySize, the size
// of every key-broker resource.
const (
	EncryptionCipher     = "aes-xts-plain64"
	EncryptionKeyBits    = secret.KeySize * 8
	EncryptionSectorSize = 4096
)

// Validate checks that e is the only supported encryption and names a
// valid resource. Policy.Validate calls it for each encrypted payload, and
// crypt.Table before it builds a dm-crypt table.
func (e *Encryption) Validate() error {
	if e.Cipher != EncryptionCipher || e.KeyBits != EncryptionKeyBits || e.SectorSize != EncryptionSectorSize || !e.IVLargeSectors {
		return fmt.Errorf("encryption must be %s, key_bits %d, sector_size %d, iv_large_sectors true", EncryptionCipher, EncryptionKeyBits, EncryptionSectorSize)
	}
	if err := secret.CheckID(e.Resource); err != nil {
		return fmt.Errorf("encryption resource: %w", err)
	}
	return nil
}

// DevBrokerCASHA256 is the SHA-256 of the DER of deploy/dev-broker/tls.crt,
// the certificate of the DEV key broker. Its private key is published in
// the repository, so anyone, the untrusted host included, can serve it:
// a TD that pins it hands its attestation to, and takes its keys from,
// whoever asks. Only a dev image may pin it (CheckKeyBrokerCA). A test
// derives it from the certificate.
const DevBrokerCASHA256 = "2aad06e1a3273f6bf713b5330b3953383d8cb1f0a4be054024c210144be3de48"

// CheckKeyBrokerCA refuses the DEV broker's certificate (DevBrokerCASHA256)
// as the key broker's ca_sha256 of an image that is not a dev image.
func CheckKeyBrokerCA(caSHA256 string, dev bool) error {
	if caSHA256 == DevBrokerCASHA256 && !dev {
		return fmt.Errorf("key_broker ca_sha256 %s pins the DEV broker certificate deploy/dev-broker/tls.crt, whose private key is public: the host could act as the broker and release or receive this image's keys. Pin your own broker's certificate (openssl x509 -in tls.crt -outform DER | sha256sum), or mark the image dev", caSHA256)
	}
	return nil
}

// CheckKeyBrokerURL checks a key broker URL: https://host[:port], as the
// guest reaches the broker, with no user, path, query or fragment. The
// manifest's key_broker block and the boot policy both use it.
func CheckKeyBrokerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || !isBaseURL(u) {
		return fmt.Errorf("key_broker url %q must be https://host:port as the guest reaches the broker (no user, path, query or fragment)", s)
	}
	return nil
}

// isBaseURL reports whether u names a host and nothing under it: no user,
// path, query or fragment.
func isBaseURL(u *url.URL) bool {
	return u.Host != "" && u.User == nil && (u.Path == "" || u.Path == "/") && u.RawQuery == "" && u.Fragment == ""
}

func (k *KeyBroker) validate() error {
	if err := CheckKeyBrokerURL(k.URL); err != nil {
		return err
	}
	if b, err := hex.DecodeString(k.CASHA256); err != nil || len(b) != 32 || strings.ToLower(k.CASHA256) != k.CASHA256 {
		return fmt.Errorf("key_broker ca_sha256 must be 64 lowercase hex digits")
	}
	return nil
}

// Image is the image identity.
type Image struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Dev     bool   `json:"dev"`
	// ReferenceURL says where the reference values are published.
	ReferenceURL string `json:"reference_url"`
}

// TDX is the TDX mode.
type TDX struct {
	// Simulate permits the TDX simulator backend (dev images only).
	Simulate bool `json:"simulate"`
	// Debug marks a debug TD (dev images only).
	Debug bool `json:"debug"`
}

// Kernel lists the modules initd loads, in dependency order.
type Kernel struct {
	Release string `json:"release"`
	// Modules are absolute initramfs paths of .ko files, in load order.
	Modules []string `json:"modules"`
}

// Disk identifies the payload disk.
type Disk struct {
	// GUID is the GPT disk GUID (lowercase, dashed). Empty when no payloads.
	GUID string `json:"guid"`
}

// PayloadFSType is the filesystem of every payload. Its dm-verity hash and
// block size are hashtree.HashAlg and hashtree.BlockSize; the builder fills
// a Payload with gptdisk.Partition.Policy.
const PayloadFSType = "erofs"

// Payload is one dm-verity protected read-only filesystem.
type Payload struct {
	Name          string `json:"name"`
	Partition     int    `json:"partition"`      // 1-based GPT index
	PartitionGUID string `json:"partition_guid"` // unique partition GUID
	FSType        string `json:"fstype"`         // PayloadFSType
	DataSize      uint64 `json:"data_size"`      // bytes of filesystem
	HashOffset    uint64 `json:"hash_offset"`    // bytes from partition start to verity superblock
	DataBlockSize uint32 `json:"data_block_size"`
	HashBlockSize uint32 `json:"hash_block_size"`
	HashAlg       string `json:"hash_alg"`  // hashtree.HashAlg
	RootHash      string `json:"root_hash"` // hex
	Salt          string `json:"salt"`      // hex
	MountPoint    string `json:"mount_point"`
	// Encryption, if set, says the data area is dm-crypt ciphertext.
	Encryption *Encryption `json:"encryption,omitempty"`
}

// Network configures the guest network. Loopback is always up.
type Network struct {
	Mode      string `json:"mode"` // "none", "dhcp" or "static"
	Interface string `json:"interface,omitempty"`
	Address   string `json:"address,omitempty"` // CIDR, static only
	Gateway   string `json:"gateway,omitempty"` // static only
}

// Service is one supervised process.
type Service struct {
	Name     string            `json:"name"`
	Command  string            `json:"command"` // absolute path, inside a payload or the initramfs
	Args     []string          `json:"args"`
	Env      map[string]string `json:"env"`
	User     string            `json:"user"`
	UID      int               `json:"uid"`
	GID      int               `json:"gid"`
	After    []string          `json:"after"`    // services started first
	Payloads []string          `json:"payloads"` // payloads that must be mounted
	Restart  string            `json:"restart"`  // "always", "on-failure", "never"
}

// Agent configures the attestation agent (also run as a Service).
type Agent struct {
	Listen       string `json:"listen"`        // e.g. ":8443"
	TLS          bool   `json:"tls"`           // HTTPS with an RA-TLS certificate
	PlainHTTP    string `json:"plain_http"`    // optional extra plain listener, dev only
	Upstream     string `json:"upstream"`      // Ollama URL, e.g. http://127.0.0.1:11434
	WebUIPayload string `json:"webui_payload"` // payload holding the web UI, or ""
	WebUIPath    string `json:"webui_path"`    // directory inside the mounted payload
	Limits       Limits `json:"limits"`        // bounds on Ollama options
	// AttestationService is the base URL of the attestation service the
	// web UI asks for a signed verdict (measured with the rest of the
	// agent's configuration); omitted when empty, so images without one
	// keep their config digest.
	AttestationService string `json:"attestation_service,omitempty"`
}

// CheckServiceURL validates an attestation service base URL: https (plain
// http only in a dev image), a host, and no path, query or credentials:
// the page appends the API paths itself.
func CheckServiceURL(s string, dev bool) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("attestation_service %q: %v", s, err)
	case u.Scheme == "http" && !dev:
		return fmt.Errorf("attestation_service %q: plain http is allowed only in a dev image; use https", s)
	case (u.Scheme != "https" && u.Scheme != "http") || !isBaseURL(u):
		return fmt.Errorf("attestation_service %q must be the service's base URL, https://HOST[:PORT]", s)
	}
	return nil
}

// Limits are the operator's bounds on the Ollama request options that cost
// memory or time; the agent enforces them on every generation request. Zero
// means no bound.
type Limits struct {
	NumCtx           int `json:"num_ctx"`            // largest options.num_ctx
	NumPredict       int `json:"num_predict"`        // largest options.num_predict / max_tokens
	KeepAliveSeconds int `json:"keep_alive_seconds"` // longest keep_alive
}

// Upper ends of the Limits fields.
const (
	MaxLimitTokens    = 1 << 24
	MaxLimitKeepAlive = 7 * 24 * 3600
)

// IsZero reports whether no limit is set.
func (l Limits) IsZero() bool { return l == Limits{} }

func (l Limits) validate() error {
	if l.NumCtx < 0 || l.NumCtx > MaxLimitTokens || l.NumPredict < 0 || l.NumPredict > MaxLimitTokens {
		return fmt.Errorf("agent limits num_ctx %d / num_predict %d must be from 0 (no limit) to %d", l.NumCtx, l.NumPredict, MaxLimitTokens)
	}
	if l.KeepAliveSeconds < 0 || l.KeepAliveSeconds > MaxLimitKeepAlive {
		return fmt.Errorf("agent limits keep_alive_seconds %d must be from 0 (no limit) to %d", l.KeepAliveSeconds, MaxLimitKeepAlive)
	}
	return nil
}

// Decode strictly parses and validates a policy.
func Decode(r io.Reader) (*Policy, error) {
	var p Policy
	if err := canonjson.Decode(r, &p); err != nil {
		return nil, fmt.Errorf("boot policy: %w", err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Marshal returns the canonical JSON encoding: fixed field order, sorted map
// keys, no HTML escaping, two-space indent, trailing newline.
func (p *Policy) Marshal() ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return canonjson.Marshal(p)
}

// NamePattern is the pattern of payload and service names. A payload's name
// is also its GPT partition name (at most 36 UTF-16 code units), its mount
// directory and part of its device-mapper name.
const NamePattern = `^[a-z][a-z0-9_-]{0,35}$`

var nameRE = regexp.MustCompile(NamePattern)

// ValidName reports whether name matches NamePattern.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// UserPattern is the pattern of a service's user name (a POSIX login name).
const UserPattern = `^[a-z_][a-z0-9_-]{0,31}$`

// EnvPattern is the pattern of a service's environment variable names.
const EnvPattern = `^[A-Za-z_][A-Za-z0-9_]*$`

var (
	userRE = regexp.MustCompile(UserPattern)
	envRE  = regexp.MustCompile(EnvPattern)
)

// ValidUser reports whether user matches UserPattern.
func ValidUser(user string) bool { return userRE.MatchString(user) }

// ValidEnvName reports whether name matches EnvPattern.
func ValidEnvName(name string) bool { return envRE.MatchString(name) }

// checkName checks the name of the i-th payload or service (kind) against
// NamePattern and the names seen before it, and records it in seen.
func checkName(kind string, i int, name string, seen map[string]bool) error {
	if !ValidName(name) {
		return fmt.Errorf("%s %d: name %q must match %s", kind, i, name, NamePattern)
	}
	if seen[name] {
		return fmt.Errorf("%s %q listed twice", kind, name)
	}
	seen[name] = true
	return nil
}

// Validate checks internal consistency.
func (p *Policy) Validate() error {
	errf := func(format string, a ...any) error { return fmt.Errorf("boot policy: "+format, a...) }
	if p.Version != SchemaVersion {
		return errf("version %d is not supported (want %d)", p.Version, SchemaVersion)
	}
	if p.Image.Name == "" || p.Image.Version == "" {
		return errf("image name and version are required")
	}
	if (p.TDX.Simulate || p.TDX.Debug) && !p.Image.Dev {
		return errf("tdx simulate/debug requires a dev image")
	}
	for _, m := range p.Kernel.Modules {
		if !strings.HasPrefix(m, "/") || !strings.HasSuffix(m, ".ko") {
			return errf("kernel module %q must be an absolute path to a .ko file", m)
		}
	}
	payloads := map[string]bool{}
	parts := map[int]bool{}
	resources := map[string]string{} // key resource -> payload
	for i, pl := range p.Payloads {
		if err := checkName("payload", i, pl.Name, payloads); err != nil {
			return errf("%w", err)
		}
		if pl.Partition < 1 || parts[pl.Partition] {
			return errf("payload %q: partition %d must be a unique 1-based index", pl.Name, pl.Partition)
		}
		parts[pl.Partition] = true
		if pl.FSType != PayloadFSType {
			return errf("payload %q: fstype %q is not supported (want %s)", pl.Name, pl.FSType, PayloadFSType)
		}
		if pl.HashAlg != hashtree.HashAlg || pl.DataBlockSize != hashtree.BlockSize || pl.HashBlockSize != hashtree.BlockSize {
			return errf("payload %q: verity must be %s with %d-byte blocks", pl.Name, hashtree.HashAlg, hashtree.BlockSize)
		}
		if pl.DataSize == 0 || pl.DataSize%hashtree.BlockSize != 0 || pl.HashOffset < pl.DataSize || pl.HashOffset%hashtree.BlockSize != 0 {
			return errf("payload %q: data_size %d / hash_offset %d must be non-zero %d-byte multiples with hash_offset >= data_size", pl.Name, pl.DataSize, pl.HashOffset, hashtree.BlockSize)
		}
		if b, err := hex.DecodeString(pl.RootHash); err != nil || len(b) != 32 {
			return errf("payload %q: root_hash must be 64 lowercase hex digits", pl.Name)
		}
		if b, err := hex.DecodeString(pl.Salt); err != nil || len(b) > 256 {
			return errf("payload %q: salt must be hex, at most 256 bytes", pl.Name)
		}
		if !strings.HasPrefix(pl.MountPoint, "/") {
			return errf("payload %q: mount_point must be absolute", pl.Name)
		}
		if pl.PartitionGUID == "" {
			return errf("payload %q: partition_guid is required", pl.Name)
		}
		if pl.Encryption != nil {
			if err := pl.Encryption.Validate(); err != nil {
				return errf("payload %q: %w", pl.Name, err)
			}
			if p.KeyBroker == nil {
				return errf("payload %q is encrypted but the policy names no key_broker", pl.Name)
			}
			if other, ok := resources[pl.Encryption.Resource]; ok {
				return errf("payloads %q and %q share the key %s; each needs its own", other, pl.Name, pl.Encryption.Resource)
			}
			resources[pl.Encryption.Resource] = pl.Name
			if pl.DataSize%EncryptionSectorSize != 0 {
				return errf("payload %q: data_size %d is not a multiple of the %d-byte encryption sector", pl.Name, pl.DataSize, EncryptionSectorSize)
			}
		}
	}
	if p.KeyBroker != nil {
		if err := p.KeyBroker.validate(); err != nil {
			return errf("%w", err)
		}
		if err := CheckKeyBrokerCA(p.KeyBroker.CASHA256, p.Image.Dev); err != nil {
			return errf("%w", err)
		}
	}
	if len(p.Payloads) > 0 && p.Disk.GUID == "" {
		return errf("disk guid is required when payloads exist")
	}
	switch p.Network.Mode {
	case "none", "dhcp":
	case "static":
		if _, err := netip.ParsePrefix(p.Network.Address); err != nil {
			return errf("network address %q must be CIDR, e.g. 10.0.2.15/24", p.Network.Address)
		}
		if p.Network.Gateway != "" {
			if _, err := netip.ParseAddr(p.Network.Gateway); err != nil {
				return errf("network gateway %q is not an IP address", p.Network.Gateway)
			}
		}
	default:
		return errf("network mode %q must be none, dhcp or static", p.Network.Mode)
	}
	services := map[string]bool{}
	for i, s := range p.Services {
		if err := checkName("service", i, s.Name, services); err != nil {
			return errf("%w", err)
		}
		if !strings.HasPrefix(s.Command, "/") {
			return errf("service %q: command %q must be an absolute path", s.Name, s.Command)
		}
		if s.User == "" || s.UID <= 0 || s.GID <= 0 {
			return errf("service %q: a non-root user, uid and gid are required", s.Name)
		}
		switch s.Restart {
		case "always", "on-failure", "never":
		default:
			return errf("service %q: restart %q must be always, on-failure or never", s.Name, s.Restart)
		}
		for _, d := range s.Payloads {
			if !payloads[d] {
				return errf("service %q needs payload %q, which is not in the policy", s.Name, d)
			}
		}
	}
	for _, s := range p.Services {
		for _, a := range s.After {
			if !services[a] {
				return errf("service %q: after %q names no service", s.Name, a)
			}
		}
	}
	if _, err := p.StartOrder(); err != nil {
		return err
	}
	if err := p.validateVolumes(services); err != nil {
		return errf("%w", err)
	}
	if p.Agent.PlainHTTP != "" && !p.Image.Dev {
		return errf("agent plain_http is allowed only in dev images")
	}
	if !p.Agent.TLS && !p.Image.Dev {
		return errf("agent TLS may be disabled only in dev images")
	}
	if p.Agent.WebUIPayload != "" && !payloads[p.Agent.WebUIPayload] {
		return errf("agent webui_payload %q is not a payload", p.Agent.WebUIPayload)
	}
	if err := p.Agent.Limits.validate(); err != nil {
		return errf("%w", err)
	}
	if p.Agent.AttestationService != "" {
		if err := CheckServiceURL(p.Agent.AttestationService, p.Image.Dev); err != nil {
			return errf("agent %w", err)
		}
	}
	return nil
}

// StartOrder returns service names in dependency order (stable: ties keep
// policy order). Cycles are errors.
func (p *Policy) StartOrder() ([]string, error) {
	idx := map[string]int{}
	for i, s := range p.Services {
		idx[s.Name] = i
	}
	state := map[string]int{} // 0 new, 1 visiting, 2 done
	var order []string
	var visit func(n string, path []string) error
	visit = func(n string, path []string) error {
		switch state[n] {
		case 1:
			return fmt.Errorf("boot policy: service dependency cycle: %s", strings.Join(append(path, n), " -> "))
		case 2:
			return nil
		}
		state[n] = 1
		after := append([]string(nil), p.Services[idx[n]].After...)
		sort.SliceStable(after, func(a, b int) bool { return idx[after[a]] < idx[after[b]] })
		for _, a := range after {
			if _, ok := idx[a]; !ok {
				continue
			}
			if err := visit(a, append(path, n)); err != nil {
				return err
			}
		}
		state[n] = 2
		order = append(order, n)
		return nil
	}
	for _, s := range p.Services {
		if err := visit(s.Name, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// RuntimeConfig is the part of the policy that changes behaviour at run time
// and is measured as the config event: services, agent and network.
type RuntimeConfig struct {
	Services []Service `json:"services"`
	Agent    Agent     `json:"agent"`
	Network  Network   `json:"network"`
	TDX      TDX       `json:"tdx"`
}

// ConfigDigest is SHA-256 of the canonical JSON of the runtime configuration.
func (p *Policy) ConfigDigest() ([]byte, error) {
	b, err := canonjson.Marshal(RuntimeConfig{Services: p.Services, Agent: p.Agent, Network: p.Network, TDX: p.TDX})
	if err != nil {
		return nil, err
	}
	d := sha256.Sum256(b)
	return d[:], nil
}

// PayloadEvent is the RTMR3 event for a successfully mounted payload.
func (pl Payload) Event() event.Event {
	rh, _ := hex.DecodeString(pl.RootHash)
	return event.Event{Version: event.Version, Kind: event.KindPayload, Name: pl.Name, Alg: event.AlgVerity, Digest: rh}
}

// ConfigEvent is the RTMR3 event for the effective runtime configuration.
func (p *Policy) ConfigEvent() (event.Event, error) {
	d, err := p.ConfigDigest()
	if err != nil {
		return event.Event{}, err
	}
	return event.Event{Version: event.Version, Kind: event.KindConfig, Name: "runtime", Alg: event.AlgSHA256, Digest: d}, nil
}

// ExpectedEvents is the RTMR3 event sequence of a healthy boot: each payload
// in policy order, then the config event. The builder precomputes RTMR3 from
// it; initd extends exactly these on success.
func (p *Policy) ExpectedEvents() ([]event.Event, error) {
	var out []event.Event
	for _, pl := range p.Payloads {
		out = append(out, pl.Event())
	}
	c, err := p.ConfigEvent()
	if err != nil {
		return nil, err
	}
	return append(out, c), nil
}
