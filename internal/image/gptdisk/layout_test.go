package gptdisk

import (
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// TestPartitionPolicy pins the boot-policy entry of a payload partition:
// the filesystem type and dm-verity parameters are part of the published
// policy.json, and the guest accepts nothing else.
func TestPartitionPolicy(t *testing.T) {
	p := Partition{
		Name: "model", Index: 2, GUID: "a5b6cc80-77e1-8094-89b7-301d4b19aa08", StartLBA: 4096, SizeBytes: 4 << 20,
		DataSize: 8192, HashOffset: 12288, RootHash: strings.Repeat("ab", 32), Salt: strings.Repeat("cd", 32),
		ContentKey: strings.Repeat("ef", 32),
	}
	got := p.Policy("/payload/model")
	want := policy.Payload{
		Name: "model", Partition: 2, PartitionGUID: "a5b6cc80-77e1-8094-89b7-301d4b19aa08", FSType: "erofs",
		DataSize: 8192, HashOffset: 12288, DataBlockSize: 4096, HashBlockSize: 4096, HashAlg: "sha256",
		RootHash: strings.Repeat("ab", 32), Salt: strings.Repeat("cd", 32), MountPoint: "/payload/model",
	}
	if got != want {
		t.Fatalf("Policy =\n%+v\nwant\n%+v", got, want)
	}
	pol := &policy.Policy{
		Version:  policy.SchemaVersion,
		Image:    policy.Image{Name: "img", Version: "1", Dev: true},
		Kernel:   policy.Kernel{Modules: []string{}},
		Disk:     policy.Disk{GUID: "5e20248e-6d54-84d4-b905-4ffd7e51bc96"},
		Payloads: []policy.Payload{got},
		Network:  policy.Network{Mode: "none"},
		Services: []policy.Service{{Name: "agent", Command: "/usr/bin/agent", Args: []string{}, Env: map[string]string{},
			User: "agent", UID: 900, GID: 900, After: []string{}, Payloads: []string{}, Restart: "always"}},
		Agent: policy.Agent{Listen: ":8443", TLS: true},
	}
	if err := pol.Validate(); err != nil {
		t.Fatalf("the boot policy rejects the entry: %v", err)
	}
}

func TestVolumeTypeGUID(t *testing.T) {
	if got := nameUUID("volume-type"); got != policy.VolumeTypeGUID {
		t.Fatalf("nameUUID(volume-type) = %s, policy.VolumeTypeGUID = %s", got, policy.VolumeTypeGUID)
	}
}
