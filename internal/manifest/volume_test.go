package manifest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/policy"
)

const volumeServices = `service "web" {
  command = "/bin/web"
}
key_broker {
  url       = "https://10.0.2.2:8444"
  ca_sha256 = "2aad06e1a3273f6bf713b5330b3953383d8cb1f0a4be054024c210144be3de48"
}
`

func loadVolumeManifest(t *testing.T, src string) (*Manifest, *Diagnostics) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.hcl")
	if err := os.WriteFile(path, []byte(base+volumeServices+src), 0o644); err != nil {
		t.Fatal(err)
	}
	return Load(path, LoadOptions{AllowUnknown: true})
}

// volume returns a volume block; an empty key leaves the key line out.
func volume(name, size, key, users string) string {
	b := "volume \"" + name + "\" {\n  size  = \"" + size + "\"\n"
	if key != "" {
		b += "  key   = \"" + key + "\"\n"
	}
	return b + "  users = [" + users + "]\n}\n"
}

func TestVolumeBlock(t *testing.T) {
	m, diags := loadVolumeManifest(t, volume("state", "512M", "tdforge/dev/state", `"agent", "web"`)+
		volume("big", "2G", "tdforge/dev/big", `"web"`))
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if len(m.Volumes) != 2 {
		t.Fatalf("volumes = %+v", m.Volumes)
	}
	v := m.Volumes[0]
	if v.Name != "state" || v.SizeBytes != 512<<20 || v.Key != "tdforge/dev/state" || strings.Join(v.Users, ",") != "agent,web" {
		t.Fatalf("volume = %+v", v)
	}
	if m.Volumes[1].SizeBytes != 2<<30 {
		t.Fatalf("2G = %d bytes", m.Volumes[1].SizeBytes)
	}
}

func TestVolumeBadInputs(t *testing.T) {
	const key, agent = "tdforge/dev/s", `"agent"`
	for _, tc := range []struct{ name, src, summary, detail string }{
		{"size unit", volume("s", "512K", key, agent), "Invalid volume size", `size "512K" is not a size`},
		{"size small", volume("s", "1M", key, agent), "Invalid volume size", "out of range: use 16M"},
		{"key", volume("s", "64M", "../etc/passwd", agent), "Invalid volume key", "resource id"},
		{"user", volume("s", "64M", key, `"ollama"`), "Reference to undeclared service", `names user "ollama"`},
		{"no users", volume("s", "64M", key, ""), "Empty users", "users must name"},
		{"dup user", volume("s", "64M", key, `"agent", "agent"`), "Duplicate user", "twice"},
		{"name", volume("State", "64M", key, agent), "Invalid volume name", "must match"},
		{"dup", volume("s", "64M", key, agent) + volume("s", "64M", "tdforge/dev/t", agent), "Duplicate volume", "already declared"},
		{"shared key", volume("s", "64M", key, agent) + volume("t", "64M", key, agent), "Key shared by a volume", `volume "t" uses key "tdforge/dev/s"`},
		{"missing key", volume("s", "64M", "", agent), "Missing required argument", "key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, diags := loadVolumeManifest(t, tc.src)
			if !diags.HasErrors() || m != nil {
				t.Fatalf("want an error, got manifest %v", m != nil)
			}
			for _, d := range diags.Diags {
				if d.Summary == tc.summary && strings.Contains(d.Detail, tc.detail) {
					if d.Subject == nil {
						t.Fatalf("diagnostic %q has no position", d.Summary)
					}
					return
				}
			}
			t.Fatalf("no diagnostic %q containing %q; got:\n%s", tc.summary, tc.detail, diags.Error())
		})
	}
}

// A volume's key comes from the key broker: a manifest without one is
// refused, naming the fix.
func TestVolumeNeedsKeyBroker(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.hcl")
	src := base + volume("s", "64M", "tdforge/dev/s", `"agent"`)
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	_, diags := Load(path, LoadOptions{AllowUnknown: true})
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "Sealed volume without a key broker") || !strings.Contains(diags.Error(), "add a key_broker block") {
		t.Fatalf("want the missing key broker named, got %v", diags.Error())
	}
}

// Ollama logs every prompt at debug level ("chat request ... prompt"), and
// initd forwards service output to the console the host reads: every
// image refuses OLLAMA_DEBUG, with or without a volume, dev or not.
func TestRefusesPromptLogging(t *testing.T) {
	vol := volume("state", "64M", "tdforge/dev/state", `"agent"`)
	load := func(head, extra, v string) (*Manifest, *Diagnostics) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "m.hcl")
		// An own broker's pin: a non-dev image may not pin the DEV broker.
		src := head + strings.Replace(volumeServices, policy.DevBrokerCASHA256, strings.Repeat("0f", 32), 1) + extra + `service "ollama" {
  command = "/bin/ollama"
  env = { OLLAMA_DEBUG = "` + v + `" }
}
`
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return Load(path, LoadOptions{AllowUnknown: true})
	}
	for _, c := range []struct{ name, head, extra string }{
		{"dev, volume", base, vol}, {"dev, no volume", base, ""}, {"non-dev, no volume", prodHead, ""},
	} {
		for _, v := range []string{"1", "true", "yes", " 'on' "} {
			m, diags := load(c.head, c.extra, v)
			if m != nil || !strings.Contains(diags.Error(), "OLLAMA_DEBUG") || !strings.Contains(diags.Error(), "console") {
				t.Fatalf("%s: OLLAMA_DEBUG=%q: manifest %v, diagnostics %s", c.name, v, m != nil, diags.Error())
			}
		}
		for _, v := range []string{"", "0", "false"} {
			if _, diags := load(c.head, c.extra, v); diags.HasErrors() {
				t.Fatalf("%s: OLLAMA_DEBUG=%q refused: %s", c.name, v, diags.Error())
			}
		}
	}
}
