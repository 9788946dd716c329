package policy

import (
	"crypto/sha256"
	"fmt"
	"path"
	"regexp"
	"slices"

	"github.com/tdforge/tdforge/internal/inputs/secret"
)

// VolumeRoot is the directory under which initd mounts sealed volumes:
// volume NAME mounts at VolumeRoot/NAME (VolumeMount).
const VolumeRoot = "/var/lib/tdforge"

// Bounds on a sealed volume's size (bytes); sizes are whole MiB.
const (
	VolumeUnit    = 1 << 20
	MinVolumeSize = 16 << 20
	MaxVolumeSize = 1 << 40
)

// VolumeTypeGUID is the GPT partition type GUID of a sealed volume's
// region on the image's disk ("tdforge sealed volume", a name-based UUID
// the builder derives); the region's unique partition GUID is the
// volume's UUID.
const VolumeTypeGUID = "776d96b5-0a4c-8fc7-ab01-57055488cb85"

// AgentUser is the name under which a volume's users list names the agent.
const AgentUser = "agent"

// Volume is one sealed (encrypted, integrity-protected) writable volume.
// initd obtains its key from the key broker after attestation, opens it
// with dm-integrity (HMAC-SHA256) under dm-crypt and mounts it at Mount;
// it never reformats a volume that fails to open.
type Volume struct {
	Name      string   `json:"name"`
	SizeBytes uint64   `json:"size_bytes"`
	Key       string   `json:"key"`   // resource id at the key broker
	Users     []string `json:"users"` // services that may write it
	// UUID identifies the volume's header; VolumeUUID derives it from the
	// image and volume names, so the same manifest always yields it.
	UUID  string `json:"uuid"`
	Mount string `json:"mount"` // VolumeMount(Name)
}

// VolumeMount is the mount directory of volume name.
func VolumeMount(name string) string { return path.Join(VolumeRoot, name) }

// VolumeUUID derives volume name's UUID for image: the first 16 bytes of
// SHA-256("tdforge/v1/volume\x00" || image || "\x00" || name) with the
// RFC 9562 version 8 (custom) and variant bits set.
func VolumeUUID(image, name string) string {
	d := sha256.Sum256([]byte("tdforge/v1/volume\x00" + image + "\x00" + name))
	d[6] = d[6]&0x0f | 0x80
	d[8] = d[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", d[0:4], d[4:6], d[6:8], d[8:10], d[10:16])
}

var guidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// ValidGUID reports whether s is a GUID in the one form tdforge writes and
// compares GPT GUIDs in: lowercase hex, dashed.
func ValidGUID(s string) bool { return guidRE.MatchString(s) }

// HasUser reports whether service user may write the volume.
func (v Volume) HasUser(user string) bool { return slices.Contains(v.Users, user) }

// AgentVolume returns the volume the agent keeps its state in (the first
// whose users include AgentUser), or nil.
func (p *Policy) AgentVolume() *Volume {
	for i := range p.Volumes {
		if p.Volumes[i].HasUser(AgentUser) {
			return &p.Volumes[i]
		}
	}
	return nil
}

// validateVolumes checks the volumes against each other and the services.
func (p *Policy) validateVolumes(services map[string]bool) error {
	if len(p.Volumes) > 0 && p.KeyBroker == nil {
		return fmt.Errorf("volume %q: a sealed volume's key comes from the key broker, and the policy has no key_broker", p.Volumes[0].Name)
	}
	seen := map[string]bool{}
	for i, v := range p.Volumes {
		if err := checkName("volume", i, v.Name, seen); err != nil {
			return err
		}
		if v.SizeBytes < MinVolumeSize || v.SizeBytes > MaxVolumeSize || v.SizeBytes%VolumeUnit != 0 {
			return fmt.Errorf("volume %q: size_bytes %d must be a whole number of MiB from %d MiB to %d MiB", v.Name, v.SizeBytes, MinVolumeSize>>20, MaxVolumeSize>>20)
		}
		if err := secret.CheckID(v.Key); err != nil {
			return fmt.Errorf("volume %q: key: %w", v.Name, err)
		}
		if len(v.Users) == 0 {
			return fmt.Errorf("volume %q: users is empty; name the services that write it", v.Name)
		}
		for _, u := range v.Users {
			if !services[u] {
				return fmt.Errorf("volume %q: user %q names no service", v.Name, u)
			}
		}
		if !ValidGUID(v.UUID) {
			return fmt.Errorf("volume %q: uuid %q must be a lowercase dashed UUID", v.Name, v.UUID)
		}
		if v.Mount != VolumeMount(v.Name) {
			return fmt.Errorf("volume %q: mount %q must be %s", v.Name, v.Mount, VolumeMount(v.Name))
		}
	}
	return nil
}
