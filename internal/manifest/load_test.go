package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func writeManifest(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustLoad(t *testing.T, path string, opts LoadOptions) *Manifest {
	t.Helper()
	m, diags := Load(path, opts)
	if diags.HasErrors() {
		t.Fatalf("Load(%s): %s", path, diags.Error())
	}
	return m
}

func TestLoadDevManifest(t *testing.T) {
	m := mustLoad(t, "../../manifests/dev.hcl", LoadOptions{})
	if m.Image != (Image{Name: "tdforge-dev", Version: "0.1.0", SourceDateEpoch: 1735689600, Dev: true, Range: m.Image.Range}) {
		t.Errorf("image = %+v", m.Image)
	}
	fw := m.Firmware
	if fw.Source.Kind != "deb" || fw.Source.Package != "ovmf" || fw.Source.DebVersion != "2022.11-6+deb12u2" || fw.Source.Arch != "all" ||
		fw.Source.PathInDeb != "usr/share/ovmf/OVMF.fd" || fw.Source.SHA256 != "e73d3d1a8799f7f6fc16b73501d913edcdd86237556fbff30693e747e6dc262e" ||
		fw.SHA256 != "7b456907dd0786d415999e801a1ac4637b8ed4d7cf5378cfc6edbe5e574dd773" {
		t.Errorf("firmware = %+v", fw)
	}
	k := m.Kernel
	if k.Source.Package != "linux-image-6.12.117+deb12-cloud-amd64-unsigned" || k.Source.Arch != "amd64" || k.Source.PathInDeb != "boot/vmlinuz-6.12.117+deb12-cloud-amd64" ||
		!reflect.DeepEqual(k.Modules, []string{"virtio_blk", "virtio_net", "dm-verity", "dm-crypt", "xts", "dm-integrity", "erofs", "qemu_fw_cfg", "button", "evdev"}) ||
		k.Cmdline != "console=ttyS0 panic=-1 quiet loglevel=4" || k.CCMeasurement != nil {
		t.Errorf("kernel = %+v", k)
	}
	if m.VM.CPUs != 2 || m.VM.MemoryMB != 2048 || m.VM.Memory != "2G" || m.VM.Platform != "qemu-7.2-tcg-sim" {
		t.Errorf("vm = %+v", m.VM)
	}
	if !m.TDX.Simulate || m.TDX.Debug {
		t.Errorf("tdx = %+v", m.TDX)
	}
	if m.Network.Mode != "static" || m.Network.Address != "10.0.2.15/24" || m.Network.Gateway != "10.0.2.2" {
		t.Errorf("network = %+v", m.Network)
	}
	var names []string
	for _, p := range m.Payloads {
		names = append(names, p.Name)
	}
	if !reflect.DeepEqual(names, []string{"ollama", "model", "webui"}) {
		t.Fatalf("payloads = %v", names)
	}
	g := m.Payload("ollama").Source
	if g.Kind != "go" || g.Module != "github.com/ollama/ollama" || g.Version != "v0.5.7" || g.Sum != "h1:YFxF3UYc3TbOH/j/OhJoxl4LOvPQRcuKUdI5txs/pkc=" ||
		g.GoPackage != "." || !g.CGO || !g.Static || g.Output != "bin/ollama" ||
		!reflect.DeepEqual(g.Ldflags, []string{"-X github.com/ollama/ollama/version.Version=0.5.7"}) {
		t.Errorf("ollama source = %+v", g)
	}
	om := m.Payload("model").Source.Model
	if om == nil || om.Name != "tiny" || om.Tag != "latest" || om.GGUF.Kind != "generate" || om.Generate != "tiny-llama" || om.Seed != 1 || om.Template != "{{ .Prompt }}" {
		t.Fatalf("model = %+v", om)
	}
	wantParams := map[string]any{"temperature": int64(0), "num_thread": int64(1), "num_ctx": int64(512), "seed": int64(1), "top_k": int64(1)}
	if !reflect.DeepEqual(om.Params, wantParams) {
		t.Errorf("params = %#v", om.Params)
	}
	if e := m.Payload("model").Encryption; e == nil || e.Key != "tdforge/dev/model" || m.Payload("ollama").Encryption != nil {
		t.Errorf("model encryption = %+v", e)
	}
	if kb := m.KeyBroker; kb == nil || kb.URL != "https://10.0.2.2:8444" || kb.CASHA256 != "2aad06e1a3273f6bf713b5330b3953383d8cb1f0a4be054024c210144be3de48" {
		t.Errorf("key_broker = %+v", kb)
	} else if crt, err := os.ReadFile("../../deploy/dev-broker/tls.crt"); err != nil {
		t.Error(err)
	} else if blk, _ := pem.Decode(crt); blk == nil || fmt.Sprintf("%x", sha256.Sum256(blk.Bytes)) != kb.CASHA256 {
		t.Errorf("key_broker.ca_sha256 does not pin deploy/dev-broker/tls.crt")
	}
	web := m.Payload("webui").Source
	wantDir, _ := filepath.Abs("../../webui")
	if web.Kind != "dir" || web.Path != wantDir {
		t.Errorf("webui = %+v, want dir %s", web, wantDir)
	}
	if len(m.Services) != 1 {
		t.Fatalf("services = %+v", m.Services)
	}
	s := m.Services[0]
	if s.Name != "ollama" || s.Payload != "ollama" || s.Command != "bin/ollama" || !reflect.DeepEqual(s.Args, []string{"serve"}) ||
		!reflect.DeepEqual(s.Env, map[string]string{"OLLAMA_HOST": "127.0.0.1:11434", "OLLAMA_MODELS": "/payload/model"}) ||
		s.User != "ollama" || !reflect.DeepEqual(s.Payloads, []string{"model"}) || s.Restart != "always" {
		t.Errorf("service = %+v", s)
	}
	a := m.Agent
	if a.Listen != ":8443" || !a.TLS || a.PlainHTTP != ":8080" || a.Upstream != "http://127.0.0.1:11434" || a.WebUI != "webui" || a.WebUIPath != "/" ||
		a.MaxNumCtx != 2048 || a.MaxNumPredict != 256 || a.MaxKeepAlive != 10*time.Minute {
		t.Errorf("agent = %+v", a)
	}
	if len(m.Unknown) != 0 {
		t.Errorf("unknown = %v", m.Unknown)
	}
}

var prodUnknown = []string{
	"payload.model.ollama_model.gguf.url",
	"payload.model.ollama_model.template_file.url",
	"payload.model.ollama_model.params_file.url",
	"payload.model.ollama_model.license.url",
	"payload.model.verity_root_hash",
}

func TestValidateWithUnknowns(t *testing.T) {
	const path = "../../manifests/confidential-ai.hcl"
	m, diags := Load(path, LoadOptions{AllowUnknown: true})
	if diags.HasErrors() {
		t.Fatalf("validate mode: %s", diags.Error())
	}
	if !reflect.DeepEqual(m.Unknown, prodUnknown) {
		t.Errorf("unknown = %q", m.Unknown)
	}
	om := m.Payload("model").Source.Model
	if om.GGUF.Kind != "url" || om.GGUF.URL != "" || om.GGUF.SHA256 != "96c415656d377afbff962f6cdb2394ab092ccbcbaab4b82525bc4ca800fe8a49" ||
		om.TemplateSource == nil || om.TemplateSource.SHA256 != "369ca498f347f710d068cbb38bf0b8692dd3fa30f30ca2ff755e211c94768150" ||
		om.Name != "deepseek-r1" || om.Tag != "7b" {
		t.Errorf("model = %+v", om)
	}
	if m.Image.Dev || m.TDX.Simulate || m.TDX.Debug || m.Agent.PlainHTTP != "" {
		t.Errorf("production manifest is not production: %+v %+v %+v", m.Image, m.TDX, m.Agent)
	}
	if len(m.Variables) != 0 {
		t.Errorf("variables = %v", m.Variables)
	}

	// Build mode: each affected attribute is an error naming the variable.
	_, diags = Load(path, LoadOptions{})
	if !diags.HasErrors() {
		t.Fatal("build mode accepted unset variables")
	}
	var got []string
	for _, d := range diags.Diags {
		if d.Summary != "Variable has no value" {
			t.Errorf("unexpected diagnostic %s", d.Error())
			continue
		}
		got = append(got, d.Subject.String())
		if !strings.Contains(d.Detail, "has no value: set -var ") {
			t.Errorf("detail %q", d.Detail)
		}
	}
	if len(got) != len(prodUnknown) {
		t.Errorf("got %d errors, want %d: %v", len(got), len(prodUnknown), got)
	}
	if !strings.Contains(diags.Error(), "variable ollama_registry has no value: set -var ollama_registry=... or TDFORGE_VAR_ollama_registry") ||
		!strings.Contains(diags.Error(), "variable model_root_hash has no value: set -var model_root_hash=... or TDFORGE_VAR_model_root_hash") {
		t.Errorf("errors do not name the variables:\n%s", diags.Error())
	}

	// With values everything resolves.
	m = mustLoad(t, path, LoadOptions{
		Vars:    map[string]string{"model_root_hash": h64},
		Environ: []string{"TDFORGE_VAR_ollama_registry=https://models.example.internal/mirror"},
	})
	if len(m.Unknown) != 0 {
		t.Errorf("unknown = %v", m.Unknown)
	}
	om = m.Payload("model").Source.Model
	if om.GGUF.URL != "https://models.example.internal/mirror/v2/library/deepseek-r1/blobs/sha256:96c415656d377afbff962f6cdb2394ab092ccbcbaab4b82525bc4ca800fe8a49" {
		t.Errorf("gguf url = %q", om.GGUF.URL)
	}
	if m.Payload("model").VerityRootHash != h64 {
		t.Errorf("verity root = %q", m.Payload("model").VerityRootHash)
	}
	// The registry variable validation rejects a trailing slash.
	_, diags = Load(path, LoadOptions{Vars: map[string]string{"model_root_hash": h64, "ollama_registry": "https://r.example/"}})
	if !strings.Contains(diags.Error(), "ollama_registry must be an https:// base URL without a trailing slash.") {
		t.Errorf("validation: %s", diags.Error())
	}
}

func TestUnusedUnsetVariableIsErrorForBuild(t *testing.T) {
	path := writeManifest(t, "variable \"unused\" {\n  type = string\n}\n"+base)
	mustLoad(t, path, LoadOptions{AllowUnknown: true})
	_, diags := Load(path, LoadOptions{})
	if !strings.Contains(diags.Error(), "m.hcl:1,1-18: Variable has no value; variable unused has no value: set -var unused=... or TDFORGE_VAR_unused.") {
		t.Errorf("got %s", diags.Error())
	}
}

const precedenceSrc = `variable "v" {
  type    = string
  default = "default"
}
variable "cpus" {
  type    = number
  default = 2
}
variable "mods" {
  type    = list(string)
  default = []
}
variable "secret" {
  type      = string
  default   = "hunter2"
  sensitive = true
}
image {
  name              = "t"
  version           = var.v
  source_date_epoch = 0
}
` + firmwareBlock + `kernel {
  file { path = "vmlinuz" }
  modules = var.mods
  cmdline = "x=${var.secret}"
}
vm {
  cpus = var.cpus
}
`

func TestVariablePrecedence(t *testing.T) {
	path := writeManifest(t, precedenceSrc)
	dir := filepath.Dir(path)
	vf1 := filepath.Join(dir, "a.tfvars.hcl")
	vf2 := filepath.Join(dir, "b.tfvars.hcl")
	os.WriteFile(vf1, []byte("v = \"file1\"\ncpus = 3\nmods = [\"erofs\"]\n"), 0o644)
	os.WriteFile(vf2, []byte("v = \"file2\"\n"), 0o644)
	env := []string{"PATH=/bin", "TDFORGE_VAR_v=env", "TDFORGE_VAR_cpus=5", "TDFORGE_VAR_other=ignored"}
	for _, tc := range []struct {
		name     string
		opts     LoadOptions
		version  string
		cpus     int
		modules  []string
		variable string
	}{
		{"default", LoadOptions{}, "default", 2, nil, "default"},
		{"env over default", LoadOptions{Environ: env}, "env", 5, nil, "env"},
		{"var-file over env", LoadOptions{Environ: env, VarFiles: []string{vf1}}, "file1", 3, []string{"erofs"}, "file1"},
		{"later var-file wins", LoadOptions{Environ: env, VarFiles: []string{vf1, vf2}}, "file2", 3, []string{"erofs"}, "file2"},
		{"-var over all", LoadOptions{Environ: env, VarFiles: []string{vf1, vf2}, Vars: map[string]string{"v": "cli", "mods": `["dm-verity", "erofs"]`}},
			"cli", 3, []string{"dm-verity", "erofs"}, "cli"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mustLoad(t, path, tc.opts)
			if m.Image.Version != tc.version || m.VM.CPUs != tc.cpus || !reflect.DeepEqual(m.Kernel.Modules, tc.modules) {
				t.Errorf("version=%q cpus=%d modules=%q; want %q %d %q", m.Image.Version, m.VM.CPUs, m.Kernel.Modules, tc.version, tc.cpus, tc.modules)
			}
			if m.Variables["v"] != tc.variable {
				t.Errorf("Variables[v] = %q", m.Variables["v"])
			}
			if _, ok := m.Variables["secret"]; ok {
				t.Error("sensitive variable listed in Variables")
			}
			if m.Kernel.Cmdline != "x=hunter2" {
				t.Errorf("cmdline = %q", m.Kernel.Cmdline)
			}
		})
	}

	_, diags := Load(path, LoadOptions{Vars: map[string]string{"nope": "1"}})
	if !strings.Contains(diags.Error(), `A variable named "nope" was assigned with -var, but the manifest`) ||
		!strings.Contains(diags.Error(), "Declared variables: v, cpus, mods, secret.") {
		t.Errorf("undeclared -var: %s", diags.Error())
	}
	_, diags = Load(path, LoadOptions{Environ: []string{"TDFORGE_VAR_cpus=many"}})
	if !strings.Contains(diags.Error(), "The value for var.cpus from environment variable TDFORGE_VAR_cpus is not a valid number") {
		t.Errorf("bad env number: %s", diags.Error())
	}
	_, diags = Load(path, LoadOptions{Vars: map[string]string{"mods": "[erofs"}})
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "from -var mods=...") {
		t.Errorf("bad -var list: %s", diags.Error())
	}
	vf3 := filepath.Join(dir, "c.hcl")
	os.WriteFile(vf3, []byte("stray = 1\n"), 0o644)
	m, diags := Load(path, LoadOptions{VarFiles: []string{vf3}})
	if m == nil || diags.HasErrors() || len(diags.Diags) != 1 || diags.Diags[0].Summary != "Value for undeclared variable" || diags.Diags[0].Subject.Start.Line != 1 {
		t.Errorf("undeclared var-file entry should be a warning: %s", diags.Error())
	}
	_, diags = Load(path, LoadOptions{VarFiles: []string{filepath.Join(dir, "missing.hcl")}})
	if !strings.Contains(diags.Error(), "missing.hcl") {
		t.Errorf("missing var-file: %s", diags.Error())
	}
}

func TestLocalsAndFunctions(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "cmdline.txt"), []byte("  quiet  \n"), 0o644)
	os.WriteFile(filepath.Join(dir, "blob.bin"), []byte("abc"), 0o644)
	src := `variable "name" {
  default = "demo"
}
locals {
  upper_name = upper(local.base)
  base       = "${var.name}-image"
  parts      = split("-", local.base)
  doc        = jsondecode(jsonencode({ a = [1, 2], b = "x" }))
}
locals {
  checks = join(",", [
    format("%03d", 7),
    tostring(length(local.parts)),
    tostring(length("héllo")),
    lookup(merge({ a = "1" }, { b = "2" }), "b", "none"),
    coalesce("", "c"),
    replace("a.b.c", ".", "/"),
    substr("abcdef", 1, 3),
    tostring(tonumber("42") + max(1, 5) + min(3, 9) + abs(-2)),
    tostring(length(toset(["a", "a", "b"]))),
    tostring(length(tolist(range(4)))),
    local.doc.b,
    sha256("abc"),
    filesha256("blob.bin"),
    trimspace(file("${path.root}/cmdline.txt")),
    tostring(length(concat([1], [2, 3]))),
    lower("ABC"),
  ])
}
image {
  name              = lower(local.upper_name)
  version           = local.checks
  source_date_epoch = 0
}
firmware {
  file { path = "fw.fd" }
  sha256 = sha256("fw")
}
kernel {
  file { path = "vmlinuz" }
  cmdline = trimspace(file("cmdline.txt"))
}
`
	path := filepath.Join(dir, "m.hcl")
	os.WriteFile(path, []byte(src), 0o644)
	// Image version is constrained; read the computed string through the
	// diagnostic, which quotes it.
	_, diags := Load(path, LoadOptions{})
	want := strings.Join([]string{"007", "2", "5", "2", "c", "a/b/c", "bcd", "52", "2", "4", "x",
		"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
		"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "quiet", "3", "abc"}, ",")
	if !strings.Contains(diags.Error(), `Image version "`+want+`" must be`) {
		t.Fatalf("computed version differs; want %q in:\n%s", want, diags.Error())
	}
	os.WriteFile(path, []byte(strings.Replace(src, "version           = local.checks", `version           = substr(local.checks, 0, 3)`, 1)), 0o644)
	m := mustLoad(t, path, LoadOptions{})
	fw := sha256.Sum256([]byte("fw"))
	if m.Image.Name != "demo-image" || m.Image.Version != "007" || m.Kernel.Cmdline != "quiet" || m.Firmware.SHA256 != hex.EncodeToString(fw[:]) {
		t.Errorf("image = %+v cmdline = %q firmware sha256 = %s", m.Image, m.Kernel.Cmdline, m.Firmware.SHA256)
	}
	if m.Firmware.Source.Path != filepath.Join(dir, "fw.fd") {
		t.Errorf("relative path resolved to %q", m.Firmware.Source.Path)
	}
}

func TestDefaults(t *testing.T) {
	m := mustLoad(t, writeManifest(t, base), LoadOptions{})
	if m.VM != (VM{CPUs: 2, MemoryMB: 2048, Memory: "2G", Platform: DefaultPlatform}) {
		t.Errorf("vm = %+v", m.VM)
	}
	if m.Network != (Network{Mode: "static", Address: "10.0.2.15/24", Gateway: "10.0.2.2"}) {
		t.Errorf("network = %+v", m.Network)
	}
	if m.Agent != (Agent{Listen: ":8443", TLS: true, Upstream: "http://127.0.0.1:11434", WebUIPath: "/"}) {
		t.Errorf("agent = %+v", m.Agent)
	}
	if m.TDX.Simulate || m.TDX.Debug || len(m.Payloads) != 0 || len(m.Services) != 0 {
		t.Errorf("tdx = %+v payloads %v services %v", m.TDX, m.Payloads, m.Services)
	}
	src := base + "vm {\n  memory = \"1536M\"\n}\nnetwork {\n  mode = \"dhcp\"\n}\nservice \"worker\" {\n  command = \"/bin/worker\"\n}\n"
	m = mustLoad(t, writeManifest(t, src), LoadOptions{})
	if m.VM.MemoryMB != 1536 || m.VM.Memory != "1536M" || m.Network.Mode != "dhcp" || m.Network.Address != "" {
		t.Errorf("vm %+v network %+v", m.VM, m.Network)
	}
	if s := m.Services[0]; s.User != "worker" || s.Restart != "always" || s.Payload != "" {
		t.Errorf("service defaults %+v", s)
	}
}

func TestFormat(t *testing.T) {
	in := []byte("vm {\ncpus=2\n    memory = \"2G\"\n}\n\n\n")
	out, err := Format(in)
	if err != nil {
		t.Fatal(err)
	}
	want := "vm {\n  cpus   = 2\n  memory = \"2G\"\n}\n"
	if string(out) != want {
		t.Errorf("Format = %q, want %q", out, want)
	}
	again, _ := Format(out)
	if !bytes.Equal(again, out) {
		t.Error("Format is not idempotent")
	}
	if _, err := Format([]byte("vm {\n")); err == nil || !strings.Contains(err.Error(), "Unclosed configuration block") {
		t.Errorf("syntax error: %v", err)
	}
	for _, p := range []string{"../../manifests/dev.hcl", "../../manifests/confidential-ai.hcl"} {
		src, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out, err := Format(src)
		if err != nil || !bytes.Equal(out, src) {
			t.Errorf("%s is not canonically formatted (err %v)", p, err)
		}
	}
}

func TestDiagnosticsRendering(t *testing.T) {
	path := writeManifest(t, base+"vm { cpu = 2 }\n")
	_, diags := Load(path, LoadOptions{})
	var buf bytes.Buffer
	if err := diags.WriteText(&buf, false, 0); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	for _, want := range []string{"Error: Unsupported argument", "on " + path + " line 14, in vm:", "14: vm { cpu = 2 }", `Did you mean "cpus"?`} {
		if !strings.Contains(text, want) {
			t.Errorf("text rendering lacks %q:\n%s", want, text)
		}
	}
	var js []JSONDiagnostic
	if err := json.Unmarshal(diags.JSON(), &js); err != nil {
		t.Fatal(err)
	}
	if len(js) != 1 || js[0].Severity != "error" || js[0].Range == nil || js[0].Range.Start.Line != 14 || js[0].Range.Start.Column != 6 ||
		js[0].Snippet != "vm { cpu = 2 }" || js[0].Range.Filename != path {
		t.Errorf("json = %+v", js)
	}
	if got := string((&Diagnostics{}).JSON()); got != "[]\n" {
		t.Errorf("empty JSON = %q", got)
	}
	_, diags = Load(filepath.Join(t.TempDir(), "absent.hcl"), LoadOptions{})
	if !strings.Contains(diags.Error(), "Cannot read manifest") {
		t.Errorf("missing file: %s", diags.Error())
	}
}
