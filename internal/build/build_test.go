package build

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/gptdisk"
	"github.com/tdforge/tdforge/internal/lockfile"
	"github.com/tdforge/tdforge/internal/manifest"
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
		Agent:   manifest.Agent{Listen: ":8443", TLS: true, Upstream: "http://127.0.0.1:11434", WebUI: "webui", WebUIPath: "/"},
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
	if pol.Payloads[1].MountPoint != "/payload/model" || pol.Network.Interface != "eth0" {
		t.Fatalf("payloads/network: %+v %+v", pol.Payloads[1], pol.Network)
	}
	ev, err := pol.ExpectedEvents()
	if err != nil || len(ev) != 4 || ev[3].Kind != "config" {
		t.Fatalf("events %v %v", ev, err)
	}
}
