package manifest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// base is a minimal valid manifest; bad cases are appended to it unless
// they are marked full.
const base = `image {
  name              = "t"
  version           = "1"
  source_date_epoch = 0
  dev               = true
}
` + bootBlocks

// prodHead is base without dev = true.
const prodHead = `image {
  name              = "t"
  version           = "1"
  source_date_epoch = 0
}
` + bootBlocks

// firmwareBlock and bootBlocks are the firmware and kernel every test
// manifest names.
const firmwareBlock = `firmware {
  file { path = "fw.fd" }
  sha256 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
}
`

const bootBlocks = firmwareBlock + `kernel {
  file { path = "vmlinuz" }
}
`

const h64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

type badCase struct {
	name    string
	full    bool   // src is the whole manifest (else appended to base)
	src     string // manifest text
	summary string // diagnostic summary
	detail  string // substring of the detail
	pos     string // "line:col" of the subject, relative to src
}

var badCases = []badCase{
	{name: "unknown block", src: "foo {}\n", summary: "Unsupported block type", detail: `Blocks of type "foo" are not expected here.`, pos: "1:1"},
	{name: "misspelled argument", src: "vm { cpu = 2 }\n", summary: "Unsupported argument", detail: `An argument named "cpu" is not expected here. Did you mean "cpus"?`, pos: "1:6"},
	{name: "duplicate singleton", src: "vm {}\nvm {}\n", summary: "Duplicate vm block", detail: "Only one vm block is allowed; the first was defined at", pos: "2:1"},
	{name: "memory unit", src: "vm {\n  memory = \"2T\"\n}\n", summary: "Invalid memory size", detail: `memory = "2T" is not a size`, pos: "2:12"},
	{name: "memory range", src: "vm {\n  memory = \"128M\"\n}\n", summary: "Invalid memory size", detail: "out of range: use 256M to 1024G", pos: "2:12"},
	{name: "cpus range", src: "vm {\n  cpus = 0\n}\n", summary: "Invalid cpus", detail: "whole number from 1 to 255; got 0", pos: "2:10"},
	{name: "cpus type", src: "vm {\n  cpus = \"two\"\n}\n", summary: "Incorrect attribute value type", detail: `Inappropriate value for attribute "cpus": a number is required`, pos: "2:10"},
	{name: "debug needs dev", full: true, src: prodHead + "tdx {\n  debug = true\n}\n", summary: "tdx.debug requires a dev image", detail: "debug = true is allowed only when the image block sets dev = true", pos: "14:3"},
	{name: "simulate needs dev", full: true, src: prodHead + "tdx { simulate = true }\n", summary: "tdx.simulate requires a dev image", detail: "a simulated TD has no hardware root of trust", pos: "13:7"},
	{name: "network mode", src: "network {\n  mode = \"bridge\"\n}\n", summary: "Invalid network mode", detail: `use "static", "dhcp" or "none"`, pos: "2:10"},
	{name: "dhcp with address", src: "network {\n  mode    = \"dhcp\"\n  address = \"10.0.0.2/24\"\n}\n", summary: "Unexpected address", detail: `only used with mode = "static"`, pos: "3:3"},
	{name: "gateway outside", src: "network {\n  address = \"10.0.2.15/24\"\n  gateway = \"10.0.3.1\"\n}\n", summary: "Gateway outside the network", detail: "gateway 10.0.3.1 is not another address in 10.0.2.0/24", pos: "3:13"},
	{name: "payload name", src: "payload \"Web\" {\n  dir { path = \"w\" }\n}\n", summary: "Invalid payload name", detail: `^[a-z][a-z0-9_-]{0,35}$`, pos: "1:9"},
	{name: "payload without source", src: "payload \"w\" {\n}\n", summary: "Missing source", detail: "payload.w needs exactly one source block: file, dir, url, deb, go, ollama_model", pos: "1:1"},
	{name: "two sources", src: "payload \"w\" {\n  dir { path = \"a\" }\n  dir { path = \"b\" }\n}\n", summary: "Too many sources", detail: "payload.w already has a dir source", pos: "3:3"},
	{name: "url needs sha256", src: "payload \"w\" {\n  url { url = \"https://example.com/x\" }\n}\n", summary: "Missing required argument", detail: `The argument "sha256" is required`, pos: "2:9"},
	{name: "sha256 uppercase", src: "payload \"w\" {\n  url {\n    url    = \"https://example.com/x\"\n    sha256 = \"" + strings.ToUpper(h64) + "\"\n  }\n}\n", summary: "Invalid sha256", detail: "64 lowercase hexadecimal digits", pos: "4:14"},
	{name: "url scheme", src: "payload \"w\" {\n  url {\n    url    = \"ftp://example.com/x\"\n    sha256 = \"" + h64 + "\"\n  }\n}\n", summary: "Invalid URL", detail: "absolute http:// or https:// URL", pos: "3:14"},
	{name: "go sum", src: "payload \"o\" {\n  go {\n    module  = \"github.com/ollama/ollama\"\n    version = \"v0.5.7\"\n    sum     = \"h1:abc\"\n  }\n}\n", summary: "Invalid go sum", detail: `"h1:" followed by 44 base64 characters`, pos: "5:15"},
	{name: "go version", src: "payload \"o\" {\n  go {\n    module  = \"github.com/ollama/ollama\"\n    version = \"main\"\n    sum     = \"h1:YFxF3UYc3TbOH/j/OhJoxl4LOvPQRcuKUdI5txs/pkc=\"\n  }\n}\n", summary: "Invalid Go module version", detail: "semantic version tag", pos: "4:15"},
	{name: "static without cgo", src: "payload \"o\" {\n  go {\n    module  = \"github.com/ollama/ollama\"\n    version = \"v0.5.7\"\n    sum     = \"h1:YFxF3UYc3TbOH/j/OhJoxl4LOvPQRcuKUdI5txs/pkc=\"\n    static  = true\n  }\n}\n", summary: "static requires cgo", detail: "Set cgo = true", pos: "6:15"},
	{name: "deb without version", src: "payload \"d\" {\n  deb {\n    package = \"ovmf\"\n    sha256  = \"" + h64 + "\"\n  }\n}\n", summary: "Missing package version", detail: `also needs version = "..."`, pos: "2:3"},
	{name: "deb package and file", src: "payload \"d\" {\n  deb {\n    package = \"ovmf\"\n    file    = \"x.deb\"\n    sha256  = \"" + h64 + "\"\n  }\n}\n", summary: "Conflicting arguments", detail: "package and file cannot both be set", pos: "4:5"},
	{name: "kernel deb without path", full: true, src: strings.Replace(base, "  file { path = \"vmlinuz\" }", "  deb {\n    file   = \"k.deb\"\n    sha256 = \""+h64+"\"\n  }", 1), summary: "Missing path", detail: "the file to extract from the package", pos: "12:3"},
	{name: "kernel module name", full: true, src: strings.Replace(base, "  file { path = \"vmlinuz\" }", "  file { path = \"vmlinuz\" }\n  modules = [\"virtio_blk.ko\"]", 1), summary: "Invalid kernel module name", detail: `Module "virtio_blk.ko" is not a module name`, pos: "13:13"},
	{name: "kernel cmdline newline", full: true, src: strings.Replace(base, "  file { path = \"vmlinuz\" }", "  file { path = \"vmlinuz\" }\n  cmdline = \"quiet\\ninit=/bin/sh\"", 1), summary: "Invalid kernel cmdline", detail: "printable ASCII on one line", pos: "13:13"},
	{name: "kernel cc_measurement type", full: true, src: strings.Replace(base, "  file { path = \"vmlinuz\" }", "  file { path = \"vmlinuz\" }\n  cc_measurement = \"maybe\"", 1), summary: "Incorrect attribute value type", detail: `Inappropriate value for attribute "cc_measurement": a bool is required`, pos: "13:20"},
	{name: "missing image", full: true, src: "firmware {\n  file { path = \"f\" }\n  sha256 = \"" + h64 + "\"\n}\nkernel {\n  file { path = \"k\" }\n}\n", summary: "Missing image block", detail: "A manifest needs exactly one image block", pos: "8:1"},
	{name: "image name", full: true, src: strings.Replace(base, `"t"`, `"Tdforge"`, 1), summary: "Invalid image name", detail: `Image name "Tdforge" must be`, pos: "2:23"},
	{name: "negative epoch", full: true, src: strings.Replace(base, "source_date_epoch = 0", "source_date_epoch = -1", 1), summary: "Invalid source_date_epoch", detail: "whole number from 0 to", pos: "4:23"},
	{name: "image missing version", full: true, src: strings.Replace(base, "  version           = \"1\"\n", "", 1), summary: "Missing required argument", detail: `The argument "version" is required`, pos: "1:7"},
	{name: "service undeclared payload", src: "service \"s\" {\n  payload = \"ollama\"\n  command = \"bin/ollama\"\n}\n", summary: "Reference to undeclared payload", detail: `service "s" runs from payload "ollama", but no payload "ollama" block exists. No payloads are declared.`, pos: "2:13"},
	{name: "service needs undeclared", src: "payload \"m\" {\n  dir { path = \"m\" }\n}\nservice \"s\" {\n  command = \"/bin/s\"\n  needs   = [\"model\"]\n}\n", summary: "Reference to undeclared payload", detail: `needs payload "model", but no payload "model" block exists. Declared payloads: m.`, pos: "6:13"},
	{name: "service after undeclared", src: "service \"s\" {\n  command = \"/bin/s\"\n  after   = [\"db\"]\n}\n", summary: "Invalid service dependency", detail: `service "s" starts after "db", but no service "db" block exists.`, pos: "3:13"},
	{name: "service after itself", src: "service \"s\" {\n  command = \"/bin/s\"\n  after   = [\"s\"]\n}\n", summary: "Invalid service dependency", detail: `cannot start after itself`, pos: "3:13"},
	{name: "service cycle", src: "service \"a\" {\n  command = \"/bin/a\"\n  after   = [\"b\"]\n}\nservice \"b\" {\n  command = \"/bin/b\"\n  after   = [\"a\"]\n}\n", summary: "Service dependency cycle", detail: "a -> b -> a", pos: "3:13"},
	{name: "service root user", src: "service \"s\" {\n  command = \"/bin/s\"\n  user    = \"root\"\n}\n", summary: "Invalid user", detail: "services never run as root", pos: "3:13"},
	{name: "service restart", src: "service \"s\" {\n  command = \"/bin/s\"\n  restart = \"sometimes\"\n}\n", summary: "Invalid restart policy", detail: `use "always", "on-failure" or "never"`, pos: "3:13"},
	{name: "service command escapes payload", src: "payload \"p\" {\n  dir { path = \"p\" }\n}\nservice \"s\" {\n  payload = \"p\"\n  command = \"../bin/sh\"\n}\n", summary: "Invalid command", detail: `relative path inside payload "p"`, pos: "6:13"},
	{name: "service env key", src: "service \"s\" {\n  command = \"/bin/s\"\n  env     = { \"1BAD\" = \"x\" }\n}\n", summary: "Invalid environment variable", detail: `env key "1BAD"`, pos: "3:13"},
	{name: "duplicate payload", src: "payload \"p\" {\n  dir { path = \"p\" }\n}\npayload \"p\" {\n  dir { path = \"q\" }\n}\n", summary: "Duplicate payload", detail: `A payload named "p" was already declared`, pos: "4:9"},
	{name: "verity hash", src: "payload \"p\" {\n  dir { path = \"p\" }\n  verity_root_hash = \"abc\"\n}\n", summary: "Invalid verity_root_hash", detail: `got "abc"`, pos: "3:22"},
	{name: "agent webui undeclared", src: "agent {\n  webui = \"ui\"\n}\n", summary: "Reference to undeclared payload", detail: `agent.webui names payload "ui"`, pos: "2:11"},
	{name: "plain http needs dev", full: true, src: prodHead + "agent {\n  plain_http = \":8080\"\n}\n", summary: "agent.plain_http requires a dev image", detail: "Remove plain_http", pos: "14:16"},
	{name: "agent max_num_ctx", src: "agent {\n  max_num_ctx = 0\n}\n", summary: "Invalid max_num_ctx", detail: "whole number from 1 to 16777216; got 0", pos: "2:17"},
	{name: "agent max_num_predict", src: "agent {\n  max_num_predict = -1\n}\n", summary: "Invalid max_num_predict", detail: "whole number from 1 to 16777216; got -1", pos: "2:21"},
	{name: "agent max_keep_alive unit", src: "agent {\n  max_keep_alive = \"10\"\n}\n", summary: "Invalid max_keep_alive", detail: `max_keep_alive "10" must be a duration in whole seconds from "1s" to "168h"`, pos: "2:20"},
	{name: "agent max_keep_alive range", src: "agent {\n  max_keep_alive = \"-5m\"\n}\n", summary: "Invalid max_keep_alive", detail: `e.g. "10m"`, pos: "2:20"},
	{name: "agent max_keep_alive fraction", src: "agent {\n  max_keep_alive = \"1.5s\"\n}\n", summary: "Invalid max_keep_alive", detail: "whole seconds", pos: "2:20"},
	{name: "encryption without key broker", src: "payload \"m\" {\n  dir { path = \"m\" }\n  encryption { key = \"tdforge/dev/model\" }\n}\n", summary: "Encrypted payload without a key broker", detail: `payload "m" is encrypted, so the guest must fetch its key from a key broker; add a key_broker block`, pos: "3:3"},
	{name: "encryption bad key id", src: "key_broker {\n  url       = \"https://10.0.2.2:8444\"\n  ca_sha256 = \"" + h64 + "\"\n}\npayload \"m\" {\n  dir { path = \"m\" }\n  encryption { key = \"../model\" }\n}\n", summary: "Invalid key resource id", detail: `key "../model" names the payload's key at the key broker`, pos: "7:22"},
	{name: "encryption without key", src: "key_broker {\n  url       = \"https://10.0.2.2:8444\"\n  ca_sha256 = \"" + h64 + "\"\n}\npayload \"m\" {\n  dir { path = \"m\" }\n  encryption {}\n}\n", summary: "Missing required argument", detail: `The argument "key" is required`, pos: "7:14"},
	{name: "encryption key shared", src: "key_broker {\n  url       = \"https://10.0.2.2:8444\"\n  ca_sha256 = \"" + h64 + "\"\n}\npayload \"a\" {\n  dir { path = \"a\" }\n  encryption { key = \"o/m/k\" }\n}\npayload \"b\" {\n  dir { path = \"b\" }\n  encryption { key = \"o/m/k\" }\n}\n", summary: "Key shared by two payloads", detail: `payloads "a" and "b" are both encrypted with key "o/m/k"`, pos: "11:3"},
	{name: "key broker over http", src: "key_broker {\n  url       = \"http://10.0.2.2:8444\"\n  ca_sha256 = \"" + h64 + "\"\n}\n", summary: "Invalid key broker URL", detail: `url "http://10.0.2.2:8444" must be https://host:port`, pos: "2:15"},
	{name: "key broker pin", src: "key_broker {\n  url       = \"https://10.0.2.2:8444\"\n  ca_sha256 = \"AB\"\n}\n", summary: "Invalid ca_sha256", detail: `ca_sha256 must be the 64 lowercase hex digit SHA-256 of the DER`, pos: "3:15"},
	{name: "DEV key broker needs dev", full: true, src: prodHead + "key_broker {\n  url       = \"https://10.0.2.2:8444\"\n  ca_sha256 = \"" + policy.DevBrokerCASHA256 + "\"\n}\n", summary: "DEV key broker in a non-dev image", detail: "whose private key is public", pos: "15:15"},
	{name: "key broker twice", src: "key_broker {\n  url       = \"https://10.0.2.2:8444\"\n  ca_sha256 = \"" + h64 + "\"\n}\nkey_broker {\n  url       = \"https://10.0.2.2:8444\"\n  ca_sha256 = \"" + h64 + "\"\n}\n", summary: "Duplicate key_broker block", detail: "Only one key_broker block is allowed", pos: "5:1"},
	{name: "model num_ctx above agent limit", src: "payload \"model\" {\n  ollama_model {\n    name = \"tiny\"\n    gguf {\n      generate = \"tiny-llama\"\n    }\n    params = { num_ctx = 4096 }\n  }\n}\nagent {\n  max_num_ctx = 2048\n}\n", summary: "Model context above the agent limit", detail: `payload "model" sets params num_ctx = 4096, above agent.max_num_ctx = 2048`, pos: "2:3"},
	{name: "agent attestation_service path", src: "agent {\n  attestation_service = \"https://attest.example/v1/attest\"\n}\n", summary: "Invalid attestation_service", detail: "base URL, https://HOST[:PORT]", pos: "2:25"},
	{name: "attestation_service http needs dev", full: true, src: prodHead + "agent {\n  attestation_service = \"http://attest.example\"\n}\n", summary: "Invalid attestation_service", detail: "plain http is allowed only in a dev image", pos: "14:25"},
	{name: "agent listen", src: "agent {\n  listen = \"8443\"\n}\n", summary: "Invalid listen address", detail: "[host]:port", pos: "2:12"},
	{name: "locals cycle", src: "locals {\n  a = local.b\n  b = local.a\n}\n", summary: "Cycle in local values", detail: "local.a -> local.b -> local.a", pos: "3:7"},
	{name: "undeclared variable", src: "vm {\n  cpus = var.cpus\n}\n", summary: "Reference to undeclared input variable", detail: `An input variable named "cpus" has not been declared.`, pos: "2:10"},
	{name: "undeclared local", src: "vm {\n  cpus = local.n\n}\n", summary: "Reference to undeclared local value", detail: `A local value named "n" has not been declared.`, pos: "2:10"},
	{name: "unknown root", src: "vm {\n  cpus = count.index\n}\n", summary: "Unknown variable", detail: `There is no variable named "count".`, pos: "2:10"},
	{name: "path attribute", src: "vm {\n  platform = path.cwd\n}\n", summary: "Invalid path attribute", detail: "root and module", pos: "2:14"},
	{name: "default type", src: "variable \"n\" {\n  type    = number\n  default = \"many\"\n}\n", summary: "Invalid default value for variable", detail: "type constraint number", pos: "3:13"},
	{name: "validation on default", src: "variable \"n\" {\n  type    = number\n  default = 1\n  validation {\n    condition     = var.n > 1\n    error_message = \"n must exceed 1.\"\n  }\n}\n", summary: "Invalid value for variable", detail: "n must exceed 1.", pos: "3:13"},
	{name: "validation refers elsewhere", src: "variable \"a\" {\n  default = 1\n}\nvariable \"n\" {\n  default = 1\n  validation {\n    condition     = var.n > var.a\n    error_message = \"no\"\n  }\n}\n", summary: "Invalid reference in variable validation", detail: "can only refer to the variable itself", pos: "7:29"},
	{name: "duplicate variable", src: "variable \"a\" {}\nvariable \"a\" {}\n", summary: "Duplicate variable declaration", detail: `A variable named "a" was already declared`, pos: "2:1"},
	{name: "generator", src: "payload \"m\" {\n  ollama_model {\n    name = \"tiny\"\n    gguf { generate = \"gpt-5\" }\n  }\n}\n", summary: "Unknown generator", detail: `the only one is "tiny-llama"`, pos: "4:23"},
	{name: "template conflict", src: "payload \"m\" {\n  ollama_model {\n    name     = \"tiny\"\n    template = \"x\"\n    gguf { generate = \"tiny-llama\" }\n    template_file {\n      file   = \"t\"\n      sha256 = \"" + h64 + "\"\n    }\n  }\n}\n", summary: "Conflicting template", detail: "not both", pos: "6:5"},
	{name: "file function", src: "agent {\n  webui_path = file(\"missing.txt\")\n}\n", summary: "Error in function call", detail: `cannot read "missing.txt"`, pos: "2:16"},
	{name: "syntax", src: "vm {\n  cpus = \n}\n", summary: "Invalid expression", detail: "Expected the start of an expression", pos: "2:10"},
	{name: "params not object", src: "payload \"m\" {\n  ollama_model {\n    name   = \"tiny\"\n    gguf { generate = \"tiny-llama\" }\n    params = [1]\n  }\n}\n", summary: "Incorrect attribute value type", detail: "an object is required", pos: "5:14"},
}

func TestBadInputs(t *testing.T) {
	if len(badCases) < 30 {
		t.Fatalf("only %d bad cases", len(badCases))
	}
	dir := t.TempDir()
	for i, tc := range badCases {
		t.Run(tc.name, func(t *testing.T) {
			src, offset := tc.src, 0
			if !tc.full {
				src = base + tc.src
				offset = strings.Count(base, "\n")
			}
			path := filepath.Join(dir, fmt.Sprintf("case%02d.hcl", i))
			if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			m, diags := Load(path, LoadOptions{AllowUnknown: true})
			if !diags.HasErrors() || m != nil {
				t.Fatalf("want an error, got manifest %v and diagnostics %v", m != nil, diags.Error())
			}
			var line, col int
			if _, err := fmt.Sscanf(tc.pos, "%d:%d", &line, &col); err != nil {
				t.Fatal(err)
			}
			line += offset
			for _, d := range diags.Diags {
				if d.Summary != tc.summary || !strings.Contains(d.Detail, tc.detail) {
					continue
				}
				if d.Subject == nil {
					t.Fatalf("diagnostic %q has no source position", d.Summary)
				}
				if d.Subject.Filename != path || d.Subject.Start.Line != line || d.Subject.Start.Column != col {
					t.Fatalf("diagnostic %q at %s, want line %d col %d", d.Summary, d.Subject, line, col)
				}
				return
			}
			t.Fatalf("no diagnostic %q with detail containing %q; got:\n%s", tc.summary, tc.detail, diags.Error())
		})
	}
}
