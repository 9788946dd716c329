package bootpolicy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/policy"
)

func good() *policy.Policy {
	return &policy.Policy{Version: 1, Image: policy.Image{Name: "t", Version: "1", Dev: true}, TDX: policy.TDX{Simulate: true},
		Kernel: policy.Kernel{Modules: []string{"/lib/modules/x/qemu_fw_cfg.ko"}},
		Disk:   policy.Disk{GUID: "11111111-2222-3333-4444-555555555555"},
		Payloads: []policy.Payload{{Name: "model", Partition: 1, PartitionGUID: "g", FSType: "erofs", DataSize: 4096, HashOffset: 4096,
			DataBlockSize: 4096, HashBlockSize: 4096, HashAlg: "sha256", RootHash: strings.Repeat("ab", 32), Salt: "", MountPoint: "/srv/model"}},
		Network: policy.Network{Mode: "none"},
		Services: []policy.Service{
			{Name: "ollama", Command: "/srv/ollama/bin/ollama", Args: []string{"serve"}, Env: map[string]string{"OLLAMA_MODELS": "/srv/model"}, User: "ollama", UID: 1001, GID: 1001, Payloads: []string{"model"}, Restart: "always"},
			{Name: "agent", Command: "/bin/agent", User: "agent", UID: 1000, GID: 1000, After: []string{"ollama"}, Restart: "always"},
		},
		Agent: policy.Agent{Listen: ":8443"}}
}

func write(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return writeRaw(t, string(b))
}

func writeRaw(t *testing.T, s string) string {
	f := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(f, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestLoadGood(t *testing.T) {
	p, err := Load(write(t, good()))
	if err != nil {
		t.Fatal(err)
	}
	if p.Services[1].Name != "agent" {
		t.Fatalf("decoded %+v", p.Services)
	}
}

func TestBadPolicies(t *testing.T) {
	cases := []struct {
		name, want string
		mut        func(p *policy.Policy)
	}{
		// Caught by policy.Validate.
		{"no simulate outside dev", "requires a dev image", func(p *policy.Policy) { p.Image.Dev = false }},
		{"relative command", "must be an absolute path", func(p *policy.Policy) { p.Services[0].Command = "ollama" }},
		{"root service", "non-root user", func(p *policy.Policy) { p.Services[0].UID = 0 }},
		{"cycle", "dependency cycle", func(p *policy.Policy) { p.Services[0].After = []string{"agent"} }},
		{"unknown payload", "not in the policy", func(p *policy.Policy) { p.Services[0].Payloads = []string{"nope"} }},
		{"bad restart", "restart", func(p *policy.Policy) { p.Services[0].Restart = "sometimes" }},
		{"bad root hash", "root_hash", func(p *policy.Policy) { p.Payloads[0].RootHash = "xyz" }},
		// Added by Check.
		{"user with colon", "user \"a:b\" must match", func(p *policy.Policy) { p.Services[0].User = "a:b" }},
		{"user uid mismatch", "has uid/gid 1000/1000 here but 1001/1001", func(p *policy.Policy) { p.Services[0].User = "agent" }},
		{"shared uid", "uid 1000 is already user", func(p *policy.Policy) { p.Services[0].UID = 1000 }},
		{"nobody uid", "below 65534", func(p *policy.Policy) { p.Services[0].UID, p.Services[0].GID = 65534, 65534 }},
		{"unclean command", "is not clean", func(p *policy.Policy) { p.Services[0].Command = "/srv/model/../bin/sh" }},
		{"mount on /etc", "would shadow initd's /etc", func(p *policy.Policy) { p.Payloads[0].MountPoint = "/etc" }},
		{"mount under /run", "would shadow initd's /run", func(p *policy.Policy) { p.Payloads[0].MountPoint = "/run/x" }},
		{"mount on root", "would shadow initd's /", func(p *policy.Policy) { p.Payloads[0].MountPoint = "/" }},
		{"unclean mount", "not clean", func(p *policy.Policy) { p.Payloads[0].MountPoint = "/srv/model/" }},
		{"overlapping mounts", "overlaps payload", func(p *policy.Policy) {
			q := p.Payloads[0]
			q.Name, q.Partition, q.MountPoint = "ui", 2, "/srv/model/ui"
			p.Payloads = append(p.Payloads, q)
		}},
		{"env name", "environment name", func(p *policy.Policy) { p.Services[0].Env["A=B"] = "x" }},
		{"env HOME", "environment HOME is set by initd", func(p *policy.Policy) { p.Services[0].Env["HOME"] = "/" }},
		{"env NUL", "NUL byte", func(p *policy.Policy) { p.Services[0].Env["X"] = "a\x00b" }},
		{"arg NUL", "NUL byte", func(p *policy.Policy) { p.Services[0].Args = []string{"a\x00"} }},
		{"interface", "not a valid interface name", func(p *policy.Policy) { p.Network.Interface = "eth0; reboot" }},
		{"module path", "not clean", func(p *policy.Policy) { p.Kernel.Modules = []string{"/lib/modules/../x.ko"} }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := good()
			c.mut(p)
			_, err := Load(write(t, p))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Load error = %v, want %q", err, c.want)
			}
			if !strings.Contains(err.Error(), "policy.json") {
				t.Fatalf("error does not name the file: %v", err)
			}
		})
	}
	for name, raw := range map[string]string{
		"unknown field": `{"version":1,"surprise":true}`,
		"trailing data": mustJSON(t) + `{}`,
		"not json":      `version=1`,
	} {
		if _, err := Load(writeRaw(t, raw)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.json")); err == nil || !strings.Contains(err.Error(), "initramfs") {
		t.Errorf("missing file: %v", err)
	}
}

func mustJSON(t *testing.T) string {
	b, err := json.Marshal(good())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
