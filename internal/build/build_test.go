package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/cli/progress"
	"github.com/tdforge/tdforge/internal/image/gptdisk"
	"github.com/tdforge/tdforge/internal/inputs/cache"
	"github.com/tdforge/tdforge/internal/inputs/lockfile"
	"github.com/tdforge/tdforge/internal/manifest"
	"github.com/tdforge/tdforge/internal/tdx/platform"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

func TestDirTreeNormalizesAndDigests(t *testing.T) {
	d := t.TempDir()
	os.MkdirAll(filepath.Join(d, "sub"), 0o700)
	os.WriteFile(filepath.Join(d, "index.html"), []byte("<p>hi</p>"), 0o600)
	os.WriteFile(filepath.Join(d, "sub", "run.sh"), []byte("#!/bin/sh\n"), 0o700)
	os.Symlink("index.html", filepath.Join(d, "link"))
	tr, digest, err := dirTree(d)
	if err != nil {
		t.Fatal(err)
	}
	modes := map[string]string{}
	for _, e := range tr.Entries {
		modes[e.Path] = e.Mode.String()
	}
	if modes["index.html"] != "-rw-r--r--" || modes["sub/run.sh"] != "-rwxr-xr-x" || modes["sub"] != "-rwxr-xr-x" {
		t.Fatalf("modes not normalized: %v", modes)
	}
	_, again, _ := dirTree(d)
	if again != digest {
		t.Fatal("digest is not stable")
	}
	os.WriteFile(filepath.Join(d, "index.html"), []byte("<p>changed</p>"), 0o600)
	if _, changed, _ := dirTree(d); changed == digest {
		t.Fatal("content change not reflected in the digest")
	}
	os.Chmod(filepath.Join(d, "sub", "run.sh"), 0o600)
	if _, changed, _ := dirTree(d); changed == digest {
		t.Fatal("mode change not reflected in the digest")
	}
}

func TestLockCheck(t *testing.T) {
	p := &pipeline{lock: &lockfile.Lock{Entries: map[string]lockfile.Entry{}}, o: Options{}}
	if err := p.lockCheck("payload.webui", strings.Repeat("a", 64)); err != nil || !p.lockDirty {
		t.Fatalf("new input not recorded: %v", err)
	}
	if err := p.lockCheck("payload.webui", strings.Repeat("a", 64)); err != nil {
		t.Fatalf("same digest refused: %v", err)
	}
	err := p.lockCheck("payload.webui", strings.Repeat("b", 64))
	if err == nil || !strings.Contains(err.Error(), strings.Repeat("b", 64)) {
		t.Fatalf("changed input accepted or digest not shown: %v", err)
	}
	p.o.UpdateLock = true
	if err := p.lockCheck("payload.webui", strings.Repeat("b", 64)); err != nil {
		t.Fatalf("-update-lock refused: %v", err)
	}
}

func TestPolicyFromManifest(t *testing.T) {
	m := &manifest.Manifest{
		Image:   manifest.Image{Name: "img", Version: "1", Dev: true},
		TDX:     manifest.TDX{Simulate: true},
		Network: manifest.Network{Mode: "static", Address: "10.0.2.15/24", Gateway: "10.0.2.2"},
		Agent: manifest.Agent{Listen: ":8443", TLS: true, Upstream: "http://127.0.0.1:11434", WebUI: "webui", WebUIPath: "/",
			MaxNumCtx: 2048, MaxNumPredict: 256, MaxKeepAlive: 10 * time.Minute},
		Services: []manifest.Service{
			{Name: "ollama", Payload: "ollama", Payloads: []string{"model", "ollama"}, Command: "bin/ollama", Args: []string{"serve"},
				Env: map[string]string{"OLLAMA_MODELS": "/payload/model"}},
		},
	}
	p := &pipeline{m: m, modules: &moduleSet{release: "6.1", paths: []string{"/lib/modules/6.1/kernel/fs/erofs/erofs.ko"}}}
	p.layout = &gptdisk.Layout{DiskGUID: "5e20248e-6d54-84d4-b905-4ffd7e51bc96"}
	for i, n := range []string{"ollama", "model", "webui"} {
		p.layout.Partitions = append(p.layout.Partitions, gptdisk.Partition{Name: n, Index: i + 1, GUID: "a5b6cc80-77e1-8094-89b7-301d4b19aa0" + string(rune('0'+i)),
			DataSize: 4096, HashOffset: 4096, RootHash: strings.Repeat("1", 64), Salt: strings.Repeat("2", 64)})
	}
	pol, err := p.policyObject()
	if err != nil {
		t.Fatal(err)
	}
	if err := pol.Validate(); err != nil {
		t.Fatal(err)
	}
	o := pol.Services[0]
	if o.Command != "/payload/ollama/bin/ollama" || o.User != "ollama" || o.UID != 1000 || strings.Join(o.Payloads, ",") != "ollama,model" || o.Restart != "always" {
		t.Fatalf("ollama service: %+v", o)
	}
	a := pol.Services[1]
	if a.Name != "agent" || a.Command != agentCommand || a.UID != agentUID || len(a.Payloads) != 0 {
		t.Fatalf("agent service: %+v", a)
	}
	if pol.Agent.Limits != (policy.Limits{NumCtx: 2048, NumPredict: 256, KeepAliveSeconds: 600}) {
		t.Fatalf("agent limits: %+v", pol.Agent.Limits)
	}
	if pol.Payloads[1].MountPoint != "/payload/model" || pol.Network.Interface != "eth0" {
		t.Fatalf("payloads/network: %+v %+v", pol.Payloads[1], pol.Network)
	}
	ev, err := pol.ExpectedEvents()
	if err != nil || len(ev) != 4 || ev[3].Kind != "config" {
		t.Fatalf("events %v %v", ev, err)
	}
}

// A registry model's pinned template/params/license blobs are stored byte
// for byte (not re-rendered), and the GGUF is validated by the store layout.
func TestModelTreeKeepsPinnedBlobs(t *testing.T) {
	c, err := cache.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, body string) manifest.Source {
		path := filepath.Join(dir, name)
		os.WriteFile(path, []byte(body), 0o644)
		sum := sha256.Sum256([]byte(body))
		return manifest.Source{Kind: "file", Path: path, SHA256: hex.EncodeToString(sum[:])}
	}
	params := write("params", "{\"stop\": [\"<x>\"],   \"temperature\": 0.6}\n") // not canonical on purpose
	tmpl := write("template", "{{ .Prompt }}\n")
	pl := manifest.Payload{Name: "model", Source: manifest.Source{Kind: "ollama_model", Model: &manifest.OllamaModel{
		Name: "tiny", Tag: "latest", Generate: "tiny-llama", Seed: 1, GGUF: manifest.Source{Kind: "generate"},
		TemplateSource: &tmpl, ParamsSource: &params,
	}}}
	p := &pipeline{m: &manifest.Manifest{}, o: Options{Cache: c, Progress: progress.OrDiscard(nil)}, inputs: map[string]string{}}
	tr, err := p.modelTree(context.Background(), "payload.model", pl)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, e := range tr.Entries {
		if e.Source == params.Path || e.Source == tmpl.Path {
			found[e.Source] = true
			if e.Path != "blobs/sha256-"+map[string]string{params.Path: params.SHA256, tmpl.Path: tmpl.SHA256}[e.Source] {
				t.Errorf("%s stored as %s", e.Source, e.Path)
			}
		}
	}
	if len(found) != 2 {
		t.Fatalf("pinned blobs not stored byte for byte: %v", found)
	}
	if p.inputs["payload.model.gguf"] == "" || p.inputs["payload.model.params"] != params.SHA256 {
		t.Fatalf("inputs not recorded: %v", p.inputs)
	}
	// A wrong pin on a blob is refused.
	params.SHA256 = strings.Repeat("0", 64)
	pl.Source.Model.ParamsSource = &params
	if _, err := p.modelTree(context.Background(), "payload.model", pl); err == nil {
		t.Fatal("a params blob with a wrong pin was accepted")
	}
}

// Missing inputs are data: the plan lists the payloads that depend on
// variables without a value, and whether RTMR3 can still use their pin.
func TestPlanListsMissingInputs(t *testing.T) {
	m := &manifest.Manifest{
		Payloads: []manifest.Payload{{Name: "ollama"}, {Name: "model", VerityRootHash: strings.Repeat("a", 64)}, {Name: "weights", VerityRootHash: "x"}, {Name: "webui"}},
		Unknown: []string{"payload.model.ollama_model.gguf.url", "payload.weights.url.url", "payload.weights.verity_root_hash",
			"payload.webui.verity_root_hash"},
	}
	plan, err := NewPlan(m)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Profile == nil || plan.Profile.Name != platform.DefaultName {
		t.Fatalf("profile %v", plan.Profile)
	}
	want := []Missing{
		{Payload: "model", Reason: "depends on unset variables (payload.model.ollama_model.gguf.url)", Pinned: true},
		{Payload: "weights", Reason: "depends on unset variables (payload.weights.url.url)"},
	}
	if !slices.Equal(plan.Missing, want) {
		t.Fatalf("missing %+v, want %+v", plan.Missing, want)
	}
	_, err = Build(context.Background(), plan, Options{OutDir: t.TempDir()})
	if err == nil || err.Error() != `cannot build: payload "model": depends on unset variables (payload.model.ollama_model.gguf.url); payload "weights": depends on unset variables (payload.weights.url.url)` {
		t.Fatalf("Build with missing inputs: %v", err)
	}
	if _, err := NewPlan(&manifest.Manifest{VM: manifest.VM{Platform: "nope"}}); err == nil || !strings.HasPrefix(err.Error(), "vm.platform: ") {
		t.Fatalf("unknown platform: %v", err)
	}
	p := &pipeline{missing: plan.Missing}
	if got := p.rtmr3Unknowable(); got != "RTMR3 cannot be computed without the bytes or the verity_root_hash pin of weights" {
		t.Errorf("rtmr3Unknowable: %q", got)
	}
	if got := p.inputsMissing(); got != "needs every payload; missing: model, weights" {
		t.Errorf("inputsMissing: %q", got)
	}
	p.missing = plan.Missing[:1]
	if p.rtmr3Unknowable() != "" {
		t.Error("a pinned missing payload does not stop RTMR3")
	}
	p.unset = []string{"service.ollama.env"}
	if got := p.rtmr3Unknowable(); !strings.Contains(got, "service.ollama.env") {
		t.Errorf("an unset setting must skip the payloads: %q", got)
	}
}
