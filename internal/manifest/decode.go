package manifest

import (
	"encoding/base64"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/tdforge/tdforge/internal/ollama/ollamastore"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

var (
	imageNameRE   = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	versionRE     = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z._+~-]{0,63}$`)
	sha256RE      = regexp.MustCompile(`^[0-9a-f]{64}$`)
	goSumRE       = regexp.MustCompile(`^h1:[A-Za-z0-9+/]{43}=$`)
	goVersionRE   = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$`)
	goModuleRE    = regexp.MustCompile(`^[a-z0-9.-]+\.[a-z]{2,}(/[A-Za-z0-9._~+-]+)*$`)
	goTagRE       = regexp.MustCompile(`^[A-Za-z0-9_.]+$`)
	debPackageRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	debVersionRE  = regexp.MustCompile(`^[0-9A-Za-z.+~:-]+$`)
	moduleNameRE  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,55}$`)
	platformRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,62}$`)
	sizeRE        = regexp.MustCompile(`^([0-9]{1,7})([MG])$`)
	generatorsSet = map[string]bool{"tiny-llama": true}
)

// Limits for the vm block.
const (
	MinMemoryMB = 256
	MaxMemoryMB = 1 << 20 // 1 TiB
	MaxCPUs     = 255
)

// Defaults written when a block or attribute is omitted.
const (
	DefaultPlatform       = "qemu-7.2-tcg-sim"
	DefaultNetworkAddress = "10.0.2.15/24"
	DefaultNetworkGateway = "10.0.2.2"
	DefaultAgentListen    = ":8443"
	DefaultAgentUpstream  = "http://127.0.0.1:11434"
)

func attrs(names ...string) []hcl.AttributeSchema {
	out := make([]hcl.AttributeSchema, len(names))
	for i, n := range names {
		req := strings.HasSuffix(n, "!")
		out[i] = hcl.AttributeSchema{Name: strings.TrimSuffix(n, "!"), Required: req}
	}
	return out
}

func blocks(types ...string) []hcl.BlockHeaderSchema {
	out := make([]hcl.BlockHeaderSchema, len(types))
	for i, t := range types {
		out[i] = hcl.BlockHeaderSchema{Type: t}
	}
	return out
}

var (
	imageSchema    = &hcl.BodySchema{Attributes: attrs("name!", "version!", "source_date_epoch!", "dev", "reference_url")}
	firmwareSchema = &hcl.BodySchema{Attributes: attrs("sha256!"), Blocks: blocks("deb", "file", "url")}
	kernelSchema   = &hcl.BodySchema{Attributes: attrs("sha256", "modules", "cmdline", "cc_measurement"), Blocks: blocks("deb", "file", "url")}
	vmSchema       = &hcl.BodySchema{Attributes: attrs("cpus", "memory", "platform")}
	tdxSchema      = &hcl.BodySchema{Attributes: attrs("simulate", "debug")}
	networkSchema  = &hcl.BodySchema{Attributes: attrs("mode", "address", "gateway")}
	agentSchema    = &hcl.BodySchema{Attributes: attrs("listen", "tls", "plain_http", "upstream", "webui", "webui_path", "max_num_ctx", "max_num_predict", "max_keep_alive", "attestation_service")}
	payloadSchema  = &hcl.BodySchema{Attributes: attrs("verity_root_hash"), Blocks: blocks("file", "dir", "url", "deb", "go", "ollama_model", "encryption")}
	serviceSchema  = &hcl.BodySchema{Attributes: attrs("payload", "command!", "args", "env", "user", "after", "needs", "restart")}

	fileSchema  = &hcl.BodySchema{Attributes: attrs("path!", "sha256")}
	dirSchema   = &hcl.BodySchema{Attributes: attrs("path!")}
	urlSchema   = &hcl.BodySchema{Attributes: attrs("url!", "sha256!")}
	debSchema   = &hcl.BodySchema{Attributes: attrs("package", "version", "file", "url", "sha256!", "path", "arch")}
	goSchema    = &hcl.BodySchema{Attributes: attrs("module!", "version!", "sum!", "package", "cgo", "static", "ldflags", "tags", "output")}
	modelSchema = &hcl.BodySchema{
		Attributes: attrs("name!", "tag", "template", "params", "system"),
		Blocks:     blocks("gguf", "template_file", "params_file", "license"),
	}
	ggufSchema = &hcl.BodySchema{Attributes: attrs("url", "file", "generate", "seed", "sha256")}
	blobSchema = &hcl.BodySchema{Attributes: attrs("file", "url", "sha256!")}
)

// decodeBlocks fills l.m from the top-level blocks and cross-checks them.
func (l *loader) decodeBlocks(c *hcl.BodyContent) {
	seen := map[string]*hcl.Block{}
	var payloadBlocks, serviceBlocks, volumeBlocks []*hcl.Block
	for _, b := range c.Blocks {
		switch b.Type {
		case "variable", "locals":
			continue
		case "payload":
			payloadBlocks = append(payloadBlocks, b)
			continue
		case "service":
			serviceBlocks = append(serviceBlocks, b)
			continue
		case "volume":
			volumeBlocks = append(volumeBlocks, b)
			continue
		}
		if first := seen[b.Type]; first != nil {
			l.diags.add(errorf(rangePtr(b.DefRange), "Duplicate "+b.Type+" block",
				"Only one %s block is allowed; the first was defined at %s. Merge them into one.", b.Type, first.DefRange))
			continue
		}
		seen[b.Type] = b
	}
	end := rangePtr(l.fileEnd)
	for _, req := range []string{"image", "firmware", "kernel"} {
		if seen[req] == nil {
			l.diags.add(errorf(end, "Missing "+req+" block", "A manifest needs exactly one %s block; see docs/manifest.md.", req))
		}
	}
	m := l.m
	devKnown := true
	if b := seen["image"]; b != nil {
		m.Image, devKnown = l.decodeImage(b)
	}
	if b := seen["firmware"]; b != nil {
		m.Firmware = l.decodeFirmware(b)
	}
	if b := seen["kernel"]; b != nil {
		m.Kernel = l.decodeKernel(b)
	}
	m.VM = VM{CPUs: 2, MemoryMB: 2048, Memory: "2G", Platform: DefaultPlatform}
	if b := seen["vm"]; b != nil {
		m.VM = l.decodeVM(b)
	}
	if b := seen["tdx"]; b != nil {
		m.TDX = l.decodeTDX(b, m.Image.Dev || !devKnown)
	}
	m.Network = Network{Mode: "static", Address: DefaultNetworkAddress, Gateway: DefaultNetworkGateway}
	if b := seen["network"]; b != nil {
		m.Network = l.decodeNetwork(b)
	}
	if b := seen["key_broker"]; b != nil {
		m.KeyBroker = l.decodeKeyBroker(b, m.Image.Dev || !devKnown)
	}
	payloadNames := map[string]hcl.Range{}
	for _, b := range payloadBlocks {
		p, ok := l.decodePayload(b)
		if !ok {
			continue
		}
		if !l.unique("payload", p.Name, b, payloadNames) {
			continue
		}
		m.Payloads = append(m.Payloads, p)
	}
	serviceNames := map[string]hcl.Range{}
	var serviceBodies []*block
	for _, b := range serviceBlocks {
		s, body, ok := l.decodeService(b, payloadNames)
		if !ok {
			continue
		}
		if !l.unique("service", s.Name, b, serviceNames) {
			continue
		}
		m.Services = append(m.Services, s)
		serviceBodies = append(serviceBodies, body)
	}
	l.checkServiceGraph(serviceBodies, serviceNames)
	l.checkPromptLogging()
	m.Volumes = l.decodeVolumes(volumeBlocks, serviceNames)
	m.Agent = Agent{Listen: DefaultAgentListen, TLS: true, Upstream: DefaultAgentUpstream, WebUIPath: "/"}
	if b := seen["agent"]; b != nil {
		m.Agent = l.decodeAgent(b, m.Image.Dev || !devKnown, payloadNames)
	}
	l.checkModelContext(m)
	l.checkEncryption(m)
}

// checkPromptLogging refuses OLLAMA_DEBUG in every image, dev images
// included (a dev image carries users' words as well): Ollama then logs
// every prompt ("chat request ... prompt=..."), whether or not the image
// keeps conversations, and initd forwards service output to the serial
// console, which the host reads. The value is read the way Ollama reads it: any
// non-empty value but a false boolean turns it on.
func (l *loader) checkPromptLogging() {
	for _, s := range l.m.Services {
		v, ok := s.Env["OLLAMA_DEBUG"]
		if !ok {
			continue
		}
		v = strings.Trim(strings.TrimSpace(v), `"'`)
		if b, err := strconv.ParseBool(v); v == "" || (err == nil && !b) {
			continue
		}
		l.diags.add(errorf(rangePtr(s.Range), "OLLAMA_DEBUG logs conversations",
			"service %q sets OLLAMA_DEBUG = %q: Ollama then logs every prompt, and initd forwards service output to the serial console, which the host reads. No image may log prompts; remove OLLAMA_DEBUG (or set it to \"0\").", s.Name, s.Env["OLLAMA_DEBUG"]))
	}
}

// checkModelContext refuses an inline model parameter num_ctx above
// agent.max_num_ctx: the agent leaves an absent num_ctx to the model, so
// every request without one would exceed the limit. (A params_file blob is
// known only after fetching; docs/agent.md asks to keep it within.)
func (l *loader) checkModelContext(m *Manifest) {
	if m.Agent.MaxNumCtx == 0 {
		return
	}
	for _, p := range m.Payloads {
		if p.Source.Model == nil {
			continue
		}
		var n float64
		switch v := p.Source.Model.Params["num_ctx"].(type) {
		case int64:
			n = float64(v)
		case float64:
			n = v
		default:
			continue
		}
		if n > float64(m.Agent.MaxNumCtx) {
			l.diags.add(errorf(rangePtr(p.Source.Model.Range), "Model context above the agent limit",
				"payload %q sets params num_ctx = %v, above agent.max_num_ctx = %d; requests without num_ctx would use it. Lower num_ctx or raise max_num_ctx.",
				p.Name, n, m.Agent.MaxNumCtx))
		}
	}
}

func (l *loader) decodeImage(hb *hcl.Block) (Image, bool) {
	b := l.open(hb, "image", imageSchema)
	img := Image{
		Name:            b.str("name", ""),
		Version:         b.str("version", ""),
		SourceDateEpoch: b.integer("source_date_epoch", 0, 0, 253402300799),
		Dev:             b.boolean("dev", false),
		ReferenceURL:    b.str("reference_url", ""),
		Range:           hb.DefRange,
	}
	b.check("name", imageNameRE.MatchString(img.Name), "Invalid image name",
		"Image name %q must be 1-63 characters of lowercase letters, digits and dashes, starting with a letter, e.g. \"tdforge-dev\".", img.Name)
	b.check("version", versionRE.MatchString(img.Version), "Invalid image version",
		"Image version %q must be 1-64 characters of letters, digits and . _ + ~ -, starting with a letter or digit, e.g. \"1.0.0\".", img.Version)
	if img.ReferenceURL != "" {
		b.check("reference_url", isHTTPURL(img.ReferenceURL), "Invalid reference_url",
			"reference_url %q must be an http:// or https:// URL where the reference values are published, or empty.", img.ReferenceURL)
	}
	devKnown := b.attr("dev") == nil || b.isSet("dev")
	return img, devKnown
}

func (l *loader) decodeFirmware(hb *hcl.Block) Firmware {
	b := l.open(hb, "firmware", firmwareSchema)
	fw := Firmware{Range: hb.DefRange}
	fw.Source = l.decodeSource(b, true, "deb", "file", "url")
	fw.SHA256 = b.str("sha256", "")
	b.checkSHA256("sha256", fw.SHA256)
	return fw
}

func (l *loader) decodeKernel(hb *hcl.Block) Kernel {
	b := l.open(hb, "kernel", kernelSchema)
	k := Kernel{Range: hb.DefRange}
	k.Source = l.decodeSource(b, true, "deb", "file", "url")
	k.SHA256 = b.str("sha256", "")
	if k.SHA256 != "" {
		b.checkSHA256("sha256", k.SHA256)
	}
	k.Modules = b.strList("modules")
	seen := map[string]bool{}
	for _, mod := range k.Modules {
		if !b.check("modules", moduleNameRE.MatchString(mod), "Invalid kernel module name",
			"Module %q is not a module name: use the name from modules.dep without path or .ko, e.g. \"virtio_blk\" or \"dm-verity\".", mod) {
			break
		}
		if !b.check("modules", !seen[mod], "Duplicate kernel module", "Module %q is listed twice; list each module once.", mod) {
			break
		}
		seen[mod] = true
	}
	k.Cmdline = b.str("cmdline", "")
	b.check("cmdline", len(k.Cmdline) < 2048 && printableASCII(k.Cmdline), "Invalid kernel cmdline",
		"cmdline must be printable ASCII on one line and shorter than 2048 bytes (the x86 COMMAND_LINE_SIZE); got %d bytes.", len(k.Cmdline))
	// cc_measurement overrides the builder's detection from the kernel's
	// version (measure.DetectStub); absent means detect.
	if v := b.boolean("cc_measurement", false); b.isSet("cc_measurement") {
		k.CCMeasurement = &v
	}
	return k
}

func (l *loader) decodeVM(hb *hcl.Block) VM {
	b := l.open(hb, "vm", vmSchema)
	vm := VM{Range: hb.DefRange}
	vm.CPUs = int(b.integer("cpus", 2, 1, MaxCPUs))
	vm.Memory = b.str("memory", "2G")
	vm.MemoryMB = 2048
	if mib, ok := sizeMiB(vm.Memory); ok {
		n := int(mib)
		if b.check("memory", n >= MinMemoryMB && n <= MaxMemoryMB, "Invalid memory size",
			"memory = %q is out of range: use %dM to %dG.", vm.Memory, MinMemoryMB, MaxMemoryMB/1024) {
			vm.MemoryMB = n
		}
	} else {
		b.check("memory", false, "Invalid memory size",
			"memory = %q is not a size: write a whole number with an M or G suffix, e.g. \"2G\" or \"1536M\".", vm.Memory)
	}
	if vm.MemoryMB%1024 == 0 {
		vm.Memory = fmt.Sprintf("%dG", vm.MemoryMB/1024)
	} else {
		vm.Memory = fmt.Sprintf("%dM", vm.MemoryMB)
	}
	vm.Platform = b.str("platform", DefaultPlatform)
	b.check("platform", platformRE.MatchString(vm.Platform), "Invalid platform",
		"platform %q must name a platform profile in lowercase letters, digits, dots and dashes, e.g. %q.", vm.Platform, DefaultPlatform)
	return vm
}

func (l *loader) decodeTDX(hb *hcl.Block, dev bool) TDX {
	b := l.open(hb, "tdx", tdxSchema)
	t := TDX{Range: hb.DefRange, Simulate: b.boolean("simulate", false), Debug: b.boolean("debug", false)}
	for _, name := range []string{"simulate", "debug"} {
		on := (name == "simulate" && t.Simulate) || (name == "debug" && t.Debug)
		if on && !dev {
			l.diags.add(errorf(rangePtr(b.attr(name).Range), "tdx."+name+" requires a dev image",
				"%s = true is allowed only when the image block sets dev = true: %s. Set dev = true in the image block for a development image, or remove %s.",
				name, map[string]string{
					"simulate": "a simulated TD has no hardware root of trust",
					"debug":    "the host can read and modify a debug TD's memory",
				}[name], name))
		}
	}
	return t
}

func (l *loader) decodeNetwork(hb *hcl.Block) Network {
	b := l.open(hb, "network", networkSchema)
	n := Network{Range: hb.DefRange, Mode: b.str("mode", "static")}
	switch n.Mode {
	case "static":
		n.Address = b.str("address", DefaultNetworkAddress)
		n.Gateway = b.str("gateway", DefaultNetworkGateway)
		prefix, err := netip.ParsePrefix(n.Address)
		if !b.check("address", err == nil && prefix.Addr().Is4() && prefix.Bits() > 0 && prefix.Bits() < 32, "Invalid network address",
			"address %q must be an IPv4 address with a prefix length, e.g. %q.", n.Address, DefaultNetworkAddress) {
			return n
		}
		gw, err := netip.ParseAddr(n.Gateway)
		if !b.check("gateway", err == nil && gw.Is4(), "Invalid gateway", "gateway %q must be an IPv4 address, e.g. %q.", n.Gateway, DefaultNetworkGateway) {
			return n
		}
		if b.isSet("address") || b.isSet("gateway") {
			name := "gateway"
			if !b.isSet("gateway") {
				name = "address"
			}
			if !prefix.Masked().Contains(gw) || gw == prefix.Addr() {
				b.fail(name, "Gateway outside the network",
					"gateway %s is not another address in %s; pick a gateway on the same subnet.", gw, prefix.Masked())
			}
		}
	case "dhcp", "none":
		for _, name := range []string{"address", "gateway"} {
			if a := b.attr(name); a != nil {
				l.diags.add(errorf(rangePtr(a.Range), "Unexpected "+name,
					"%s is only used with mode = \"static\"; remove it or set mode = \"static\".", name))
			}
		}
	default:
		b.check("mode", false, "Invalid network mode", "mode %q is not supported: use \"static\", \"dhcp\" or \"none\".", n.Mode)
	}
	return n
}

func (l *loader) decodeAgent(hb *hcl.Block, dev bool, payloads map[string]hcl.Range) Agent {
	b := l.open(hb, "agent", agentSchema)
	a := Agent{
		Range:     hb.DefRange,
		Listen:    b.str("listen", DefaultAgentListen),
		TLS:       b.boolean("tls", true),
		PlainHTTP: b.str("plain_http", ""),
		Upstream:  b.str("upstream", DefaultAgentUpstream),
		WebUI:     b.str("webui", ""),
		WebUIPath: b.str("webui_path", "/"),

		AttestationService: b.str("attestation_service", ""),
	}
	b.check("listen", validListen(a.Listen), "Invalid listen address",
		"listen %q must be [host]:port with a port from 1 to 65535, e.g. %q.", a.Listen, DefaultAgentListen)
	if a.PlainHTTP != "" {
		b.check("plain_http", validListen(a.PlainHTTP), "Invalid plain_http address",
			"plain_http %q must be [host]:port, e.g. \":8080\", or empty.", a.PlainHTTP)
		if !dev && b.isSet("plain_http") {
			b.fail("plain_http", "agent.plain_http requires a dev image",
				"A plain HTTP listener has no attested channel; it is allowed only when the image block sets dev = true. Remove plain_http.")
		}
		if a.PlainHTTP == a.Listen {
			b.check("plain_http", false, "Conflicting listen addresses", "plain_http and listen are both %q; use different ports.", a.Listen)
		}
	}
	if !a.TLS && !dev && b.isSet("tls") {
		b.fail("tls", "agent.tls = false requires a dev image",
			"Without TLS the quote is not bound to a channel; tls = false is allowed only when the image block sets dev = true.")
	}
	u, err := url.Parse(a.Upstream)
	b.check("upstream", err == nil && u.Scheme == "http" && u.Host != "" && (u.Path == "" || u.Path == "/"), "Invalid upstream",
		"upstream %q must be an http://host:port URL of the model server inside the guest, e.g. %q.", a.Upstream, DefaultAgentUpstream)
	if a.WebUI != "" && b.isSet("webui") {
		if _, ok := payloads[a.WebUI]; !ok {
			b.fail("webui", "Reference to undeclared payload",
				"agent.webui names payload %q, but no payload %q block exists. %s", a.WebUI, a.WebUI, declared("payloads", payloads))
		}
	}
	if a.AttestationService != "" {
		if err := policy.CheckServiceURL(a.AttestationService, dev); err != nil {
			b.fail("attestation_service", "Invalid attestation_service", "%v, e.g. \"https://attest.example:8443\".", err)
		}
	}
	b.check("webui_path", strings.HasPrefix(a.WebUIPath, "/") && path.Clean(a.WebUIPath) == a.WebUIPath, "Invalid webui_path",
		"webui_path %q must be a clean absolute directory inside the web UI payload, e.g. \"/\" or \"/dist\".", a.WebUIPath)
	a.MaxNumCtx = int(b.integer("max_num_ctx", 0, 1, policy.MaxLimitTokens))
	a.MaxNumPredict = int(b.integer("max_num_predict", 0, 1, policy.MaxLimitTokens))
	if ka := b.str("max_keep_alive", ""); b.isSet("max_keep_alive") {
		d, err := time.ParseDuration(ka)
		if b.check("max_keep_alive", err == nil && d >= time.Second && d <= policy.MaxLimitKeepAlive*time.Second && d%time.Second == 0,
			"Invalid max_keep_alive", "max_keep_alive %q must be a duration in whole seconds from \"1s\" to \"168h\", e.g. \"10m\".", ka) {
			a.MaxKeepAlive = d
		}
	}
	return a
}

func (l *loader) decodePayload(hb *hcl.Block) (Payload, bool) {
	name := hb.Labels[0]
	if !policy.ValidName(name) {
		l.diags.add(errorf(rangePtr(hb.LabelRanges[0]), "Invalid payload name",
			"Payload name %q must match %s (lowercase letter first, at most 36 characters).", name, policy.NamePattern))
		return Payload{}, false
	}
	b := l.open(hb, "payload."+name, payloadSchema)
	p := Payload{Name: name, Range: hb.DefRange}
	p.Source = l.decodeSource(b, false, "file", "dir", "url", "deb", "go", "ollama_model")
	p.Encryption = l.decodeEncryption(b)
	p.VerityRootHash = b.str("verity_root_hash", "")
	if p.VerityRootHash != "" {
		b.check("verity_root_hash", sha256RE.MatchString(p.VerityRootHash), "Invalid verity_root_hash",
			"verity_root_hash must be the 64 lowercase hex digit dm-verity root hash (sha256), as printed by builder build; got %q.", p.VerityRootHash)
	}
	return p, true
}

func (l *loader) decodeService(hb *hcl.Block, payloads map[string]hcl.Range) (Service, *block, bool) {
	name := hb.Labels[0]
	if !policy.ValidName(name) {
		l.diags.add(errorf(rangePtr(hb.LabelRanges[0]), "Invalid service name",
			"Service name %q must match %s (lowercase letter first, at most 36 characters).", name, policy.NamePattern))
		return Service{}, nil, false
	}
	b := l.open(hb, "service."+name, serviceSchema)
	s := Service{
		Name:     name,
		Payload:  b.str("payload", ""),
		Command:  b.str("command", ""),
		Args:     b.strList("args"),
		Env:      b.strMap("env"),
		User:     b.str("user", name),
		After:    b.strList("after"),
		Payloads: b.strList("needs"),
		Restart:  b.str("restart", "always"),
		Range:    hb.DefRange,
	}
	if s.Payload != "" {
		if _, ok := payloads[s.Payload]; !ok {
			b.check("payload", false, "Reference to undeclared payload",
				"service %q runs from payload %q, but no payload %q block exists. %s", name, s.Payload, s.Payload, declared("payloads", payloads))
		}
		b.check("command", isRelPath(s.Command), "Invalid command",
			"command %q must be a relative path inside payload %q without \"..\", e.g. \"bin/ollama\".", s.Command, s.Payload)
	} else {
		b.check("command", strings.HasPrefix(s.Command, "/") && path.Clean(s.Command) == s.Command, "Invalid command",
			"command %q must be an absolute path in the initramfs when the service has no payload; set payload = \"<name>\" to run a payload's binary.", s.Command)
	}
	for _, arg := range s.Args {
		if !b.check("args", !strings.ContainsRune(arg, 0), "Invalid argument", "Arguments must not contain NUL bytes.") {
			break
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.Env)) {
		if !b.check("env", policy.ValidEnvName(k) && !strings.ContainsRune(s.Env[k], 0), "Invalid environment variable",
			"env key %q must be a name like OLLAMA_HOST (letters, digits, underscore; not starting with a digit) and values must not contain NUL.", k) {
			break
		}
	}
	if b.attr("user") == nil {
		if !policy.ValidUser(s.User) {
			b.fail("user", "Invalid user", "The default user is the service name %q, which is not a valid user name; set user explicitly.", name)
		}
	} else {
		b.check("user", policy.ValidUser(s.User) && s.User != "root", "Invalid user",
			"user %q must be a non-root user name (lowercase letters, digits, _ and -, at most 32 characters); services never run as root.", s.User)
	}
	for _, p := range s.Payloads {
		if _, ok := payloads[p]; !ok {
			b.check("needs", false, "Reference to undeclared payload",
				"service %q needs payload %q, but no payload %q block exists. %s", name, p, p, declared("payloads", payloads))
			break
		}
	}
	switch s.Restart {
	case "always", "on-failure", "never":
	default:
		b.check("restart", false, "Invalid restart policy", "restart %q is not supported: use \"always\", \"on-failure\" or \"never\".", s.Restart)
	}
	return s, b, true
}

// checkServiceGraph checks that `after` names declared services and that
// the start order has no cycle.
func (l *loader) checkServiceGraph(bodies []*block, names map[string]hcl.Range) {
	edges := map[string][]string{}
	byName := map[string]*block{}
	for i, s := range l.m.Services {
		b := bodies[i]
		byName[s.Name] = b
		for _, dep := range s.After {
			if _, ok := names[dep]; !ok || dep == s.Name {
				detail := fmt.Sprintf("service %q starts after %q, but no service %q block exists. %s", s.Name, dep, dep, declared("services", names))
				if dep == s.Name {
					detail = fmt.Sprintf("service %q cannot start after itself; remove %q from after.", s.Name, dep)
				}
				b.fail("after", "Invalid service dependency", "%s", detail)
				continue
			}
			edges[s.Name] = append(edges[s.Name], dep)
		}
	}
	state := map[string]int{}
	var stack []string
	reported := false
	var visit func(n string)
	visit = func(n string) {
		if reported || state[n] == 2 {
			return
		}
		if state[n] == 1 {
			i := len(stack) - 1
			for stack[i] != n {
				i--
			}
			cycle := append(append([]string{}, stack[i:]...), n)
			byName[n].fail("after", "Service dependency cycle",
				"Services cannot start: %s. Remove one of these after entries.", strings.Join(cycle, " -> "))
			reported = true
			return
		}
		state[n] = 1
		stack = append(stack, n)
		for _, d := range edges[n] {
			visit(d)
		}
		stack = stack[:len(stack)-1]
		state[n] = 2
	}
	for _, s := range l.m.Services {
		visit(s.Name)
	}
}

// decodeSource decodes the single source block among kinds in b. needPath
// says the deb form must name a file inside the package.
func (l *loader) decodeSource(b *block, needPath bool, kinds ...string) Source {
	var found *hcl.Block
	for _, nb := range b.content.Blocks {
		if !slices.Contains(kinds, nb.Type) {
			continue
		}
		if found != nil {
			l.diags.add(errorf(rangePtr(nb.DefRange), "Too many sources",
				"%s already has a %s source at %s; a block takes exactly one source block (%s).", b.path, found.Type, found.DefRange, strings.Join(kinds, ", ")))
			continue
		}
		found = nb
	}
	if found == nil {
		l.diags.add(errorf(rangePtr(b.def), "Missing source",
			"%s needs exactly one source block: %s.", b.path, strings.Join(kinds, ", ")))
		return Source{}
	}
	p := b.path + "." + found.Type
	switch found.Type {
	case "file":
		sb := l.open(found, p, fileSchema)
		s := Source{Kind: "file", Range: found.DefRange, Path: sb.filePath("path"), SHA256: sb.str("sha256", "")}
		if s.SHA256 != "" {
			sb.checkSHA256("sha256", s.SHA256)
		}
		return s
	case "dir":
		sb := l.open(found, p, dirSchema)
		return Source{Kind: "dir", Range: found.DefRange, Path: sb.filePath("path")}
	case "url":
		sb := l.open(found, p, urlSchema)
		s := Source{Kind: "url", Range: found.DefRange, URL: sb.str("url", ""), SHA256: sb.str("sha256", "")}
		sb.checkURL("url", s.URL)
		sb.checkSHA256("sha256", s.SHA256)
		return s
	case "deb":
		return l.decodeDeb(found, p, needPath)
	case "go":
		return l.decodeGo(found, p)
	case "ollama_model":
		return l.decodeModel(found, p)
	}
	panic("unreachable source kind " + found.Type)
}

func (l *loader) decodeDeb(hb *hcl.Block, p string, needPath bool) Source {
	b := l.open(hb, p, debSchema)
	s := Source{Kind: "deb", Range: hb.DefRange}
	form := b.exclusive("package", "file", "url")
	switch form {
	case "package":
		s.Package = b.str("package", "")
		s.DebVersion = b.str("version", "")
		b.check("package", debPackageRE.MatchString(s.Package), "Invalid package name",
			"package %q is not a Debian package name (lowercase letters, digits and + . -).", s.Package)
		if b.attr("version") == nil {
			l.diags.add(errorf(rangePtr(b.def), "Missing package version",
				"A deb source with package = %q also needs version = \"...\" (exact, as shown by apt-cache policy), so the build is reproducible.", s.Package))
		} else {
			b.check("version", debVersionRE.MatchString(s.DebVersion), "Invalid package version", "version %q is not a Debian version string.", s.DebVersion)
		}
	case "file":
		s.DebFile = b.filePath("file")
	case "url":
		s.URL = b.str("url", "")
		b.checkURL("url", s.URL)
	default:
		l.diags.add(errorf(rangePtr(b.def), "Missing package",
			"A deb source needs package = \"...\" with version = \"...\", or file = \"local.deb\", or url = \"https://...\"."))
	}
	if form != "package" && b.attr("version") != nil {
		l.diags.add(errorf(rangePtr(b.attr("version").Range), "Unexpected version", "version is only used with package = \"...\"; remove it."))
	}
	s.SHA256 = b.str("sha256", "")
	b.checkSHA256("sha256", s.SHA256)
	s.PathInDeb = b.str("path", "")
	if s.PathInDeb == "" && b.attr("path") == nil && needPath {
		l.diags.add(errorf(rangePtr(b.def), "Missing path",
			"This deb source needs path = \"...\": the file to extract from the package, e.g. \"boot/vmlinuz-6.1.0-56-cloud-amd64\"."))
	}
	if s.PathInDeb != "" {
		b.check("path", isRelPath(s.PathInDeb), "Invalid path",
			"path %q must be a relative path inside the package without \"..\" or a leading /, e.g. \"usr/share/ovmf/OVMF.fd\".", s.PathInDeb)
	}
	s.Arch = b.str("arch", "amd64")
	b.check("arch", s.Arch == "amd64" || s.Arch == "all", "Invalid arch", "arch %q is not supported: use \"amd64\" or \"all\".", s.Arch)
	return s
}

func (l *loader) decodeGo(hb *hcl.Block, p string) Source {
	b := l.open(hb, p, goSchema)
	s := Source{
		Kind:      "go",
		Range:     hb.DefRange,
		Module:    b.str("module", ""),
		Version:   b.str("version", ""),
		Sum:       b.str("sum", ""),
		GoPackage: b.str("package", "."),
		CGO:       b.boolean("cgo", false),
		Static:    b.boolean("static", false),
		Ldflags:   b.strList("ldflags"),
		Tags:      b.strList("tags"),
	}
	b.check("module", goModuleRE.MatchString(s.Module), "Invalid Go module path",
		"module %q is not a Go module path such as \"github.com/ollama/ollama\".", s.Module)
	b.check("version", goVersionRE.MatchString(s.Version), "Invalid Go module version",
		"version %q must be a semantic version tag such as \"v0.5.7\" (branches are not reproducible).", s.Version)
	ok := goSumRE.MatchString(s.Sum)
	if ok {
		raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s.Sum, "h1:"))
		ok = err == nil && len(raw) == 32
	}
	b.check("sum", ok, "Invalid go sum",
		"sum %q must be the module's go.sum hash, \"h1:\" followed by 44 base64 characters ending in \"=\" (see the module's line in go.sum).", s.Sum)
	b.check("package", s.GoPackage == "." || (isRelPath(strings.TrimPrefix(s.GoPackage, "./")) && strings.HasPrefix(s.GoPackage, "./")) ||
		(s.Module != "" && strings.HasPrefix(s.GoPackage, s.Module+"/")), "Invalid Go package",
		"package %q must be \".\", a ./relative directory, or an import path inside module %q.", s.GoPackage, s.Module)
	if s.Static && !s.CGO && b.isSet("static") {
		b.fail("static", "static requires cgo", "static = true links a cgo binary statically; pure Go binaries are already static. Set cgo = true or remove static.")
	}
	for _, t := range s.Tags {
		if !b.check("tags", goTagRE.MatchString(t), "Invalid build tag", "Build tag %q may contain only letters, digits, _ and .", t) {
			break
		}
	}
	for _, f := range s.Ldflags {
		if !b.check("ldflags", !strings.ContainsRune(f, 0) && f != "", "Invalid ldflags", "ldflags entries must be non-empty strings.") {
			break
		}
	}
	def := s.Module
	if s.GoPackage != "." {
		def = s.GoPackage
	}
	s.Output = b.str("output", "bin/"+path.Base(def))
	b.check("output", isRelPath(s.Output), "Invalid output",
		"output %q must be a relative path inside the payload without \"..\", e.g. \"bin/ollama\".", s.Output)
	return s
}

func (l *loader) decodeModel(hb *hcl.Block, p string) Source {
	b := l.open(hb, p, modelSchema)
	m := &OllamaModel{Name: b.str("name", ""), Tag: b.str("tag", "latest"), Range: hb.DefRange}
	b.check("name", ollamastore.ValidModelName(m.Name), "Invalid model name",
		"Model name %q must be lowercase letters, digits, . _ - (starting with a letter or digit), e.g. \"deepseek-r1\".", m.Name)
	b.check("tag", ollamastore.ValidTag(m.Tag), "Invalid model tag", "Model tag %q must be letters, digits, . _ -, e.g. \"7b\" or \"latest\".", m.Tag)
	if gb := b.single("gguf"); gb != nil {
		l.decodeGGUF(gb, p+".gguf", m)
	} else {
		l.diags.add(errorf(rangePtr(b.def), "Missing gguf block",
			"An ollama_model needs a gguf { } block with url, file or generate = \"tiny-llama\"."))
	}
	m.Template = b.str("template", "")
	if tb := b.single("template_file"); tb != nil {
		if b.attr("template") != nil {
			l.diags.add(errorf(rangePtr(tb.DefRange), "Conflicting template", "Set either template = \"...\" or a template_file block, not both."))
		}
		m.TemplateSource = l.decodeBlob(tb, p+".template_file")
	}
	m.Params = b.anyMap("params")
	if pb := b.single("params_file"); pb != nil {
		if b.attr("params") != nil {
			l.diags.add(errorf(rangePtr(pb.DefRange), "Conflicting params", "Set either params = { ... } or a params_file block, not both."))
		}
		m.ParamsSource = l.decodeBlob(pb, p+".params_file")
	}
	m.System = b.str("system", "")
	if lb := b.single("license"); lb != nil {
		m.License = l.decodeBlob(lb, p+".license")
	}
	return Source{Kind: "ollama_model", Model: m, Range: hb.DefRange}
}

func (l *loader) decodeGGUF(hb *hcl.Block, p string, m *OllamaModel) {
	b := l.open(hb, p, ggufSchema)
	g := &m.GGUF
	g.Range = hb.DefRange
	switch b.exclusive("url", "file", "generate") {
	case "url":
		g.Kind, g.URL = "url", b.str("url", "")
		b.checkURL("url", g.URL)
		if b.attr("sha256") == nil {
			l.diags.add(errorf(rangePtr(b.def), "Missing sha256", "A gguf fetched from a url needs sha256 = \"<64 hex digits>\" to pin the weights."))
		}
	case "file":
		g.Kind, g.Path = "file", b.filePath("file")
	case "generate":
		g.Kind = "generate"
		m.Generate = b.str("generate", "")
		b.check("generate", generatorsSet[m.Generate], "Unknown generator",
			"generate = %q is not a built-in model generator; the only one is \"tiny-llama\".", m.Generate)
		m.Seed = b.integer("seed", 0, 0, 1<<53)
	default:
		l.diags.add(errorf(rangePtr(b.def), "Missing gguf source", "gguf needs one of url = \"...\", file = \"...\" or generate = \"tiny-llama\"."))
	}
	if g.Kind != "generate" && b.attr("seed") != nil {
		l.diags.add(errorf(rangePtr(b.attr("seed").Range), "Unexpected seed", "seed is only used with generate = \"tiny-llama\"; remove it."))
	}
	g.SHA256 = b.str("sha256", "")
	if g.SHA256 != "" {
		b.checkSHA256("sha256", g.SHA256)
	}
}

// decodeBlob decodes a { file | url, sha256 } block.
func (l *loader) decodeBlob(hb *hcl.Block, p string) *Source {
	b := l.open(hb, p, blobSchema)
	s := &Source{Range: hb.DefRange, SHA256: b.str("sha256", "")}
	switch b.exclusive("file", "url") {
	case "file":
		s.Kind, s.Path = "file", b.filePath("file")
	case "url":
		s.Kind, s.URL = "url", b.str("url", "")
		b.checkURL("url", s.URL)
	default:
		l.diags.add(errorf(rangePtr(b.def), "Missing blob source", "%s needs file = \"...\" or url = \"...\".", hb.Type))
	}
	b.checkSHA256("sha256", s.SHA256)
	return s
}

// path reads a file path attribute and resolves it against the manifest directory.
func (b *block) filePath(name string) string {
	p := b.str(name, "")
	if !b.isSet(name) {
		return ""
	}
	if p == "" || strings.ContainsRune(p, 0) {
		b.fail(name, "Invalid path", "%s must be a non-empty path; relative paths resolve from the manifest directory.", name)
		return ""
	}
	return resolve(b.l.dir, p)
}

func (b *block) checkSHA256(name, v string) {
	b.check(name, sha256RE.MatchString(v), "Invalid sha256",
		"%s must be 64 lowercase hexadecimal digits (a SHA-256 digest, e.g. from sha256sum); got %q (%d characters).", name, v, len(v))
}

func (b *block) checkURL(name, v string) {
	b.check(name, isHTTPURL(v), "Invalid URL", "%s %q must be an absolute http:// or https:// URL.", name, v)
}

func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.User == nil
}

func isRelPath(p string) bool {
	return p != "" && !strings.HasPrefix(p, "/") && path.Clean(p) == p && p != "." && p != ".." &&
		!strings.HasPrefix(p, "../") && !strings.ContainsRune(p, 0)
}

func validListen(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return false
		}
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// unique records the name of block b in names, or reports it as a
// duplicate kind (payload, service) and returns false.
func (l *loader) unique(kind, name string, b *hcl.Block, names map[string]hcl.Range) bool {
	if prev, dup := names[name]; dup {
		l.diags.add(errorf(rangePtr(b.LabelRanges[0]), "Duplicate "+kind,
			"A %s named %q was already declared at %s. %s names must be unique.", kind, name, prev, strings.ToUpper(kind[:1])+kind[1:]))
		return false
	}
	names[name] = b.DefRange
	return true
}

func declared(what string, names map[string]hcl.Range) string {
	if len(names) == 0 {
		return "No " + what + " are declared."
	}
	return "Declared " + what + ": " + strings.Join(slices.Sorted(maps.Keys(names)), ", ") + "."
}

// Payload returns the payload named name, or nil.
func (m *Manifest) Payload(name string) *Payload {
	for i := range m.Payloads {
		if m.Payloads[i].Name == name {
			return &m.Payloads[i]
		}
	}
	return nil
}

// sizeMiB parses a size written as a whole number of MiB or GiB ("1536M",
// "2G"), the one form the manifest takes for memory and volume sizes.
func sizeMiB(s string) (uint64, bool) {
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	if m[2] == "G" {
		n *= 1024
	}
	return n, true
}
