package build

import (
	"testing"

	"github.com/tdforge/tdforge/internal/manifest"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// The manifest's volumes reach the boot policy with a UUID derived from
// the image and volume names and the fixed mount point.
func TestPolicyVolumes(t *testing.T) {
	m := &manifest.Manifest{
		Image:   manifest.Image{Name: "img", Version: "1", Dev: true},
		Network: manifest.Network{Mode: "none"},
		Agent:   manifest.Agent{Listen: ":8443", TLS: true, Upstream: "http://127.0.0.1:11434", WebUIPath: "/"},
		Volumes: []manifest.Volume{{Name: "state", SizeBytes: 512 << 20, Key: "tdforge/dev/state", Users: []string{"agent"}}},
		// No encrypted payload: the volume alone brings the key broker
		// into the policy.
		KeyBroker: &manifest.KeyBroker{URL: "https://10.0.2.2:8444", CASHA256: "2aad06e1a3273f6bf713b5330b3953383d8cb1f0a4be054024c210144be3de48"},
	}
	p := &pipeline{m: m, modules: &moduleSet{release: "6.1"}}
	pol, err := p.policyObject()
	if err != nil {
		t.Fatal(err)
	}
	if err := pol.Validate(); err != nil {
		t.Fatal(err)
	}
	if pol.KeyBroker == nil || pol.KeyBroker.URL != "https://10.0.2.2:8444" {
		t.Fatalf("policy key broker %+v", pol.KeyBroker)
	}
	v := pol.AgentVolume()
	if v == nil || v.SizeBytes != 512<<20 || v.Key != "tdforge/dev/state" || v.Mount != "/var/lib/tdforge/state" || v.UUID != policy.VolumeUUID("img", "state") {
		t.Fatalf("policy volume %+v", v)
	}
}
