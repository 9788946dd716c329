package manifest

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"

	"github.com/tdforge/tdforge/internal/inputs/secret"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// Volume is a `volume "<name>"` block: a sealed writable volume whose key
// the key broker releases to the attested TD.
type Volume struct {
	Name      string
	Size      string // as written, e.g. "512M"
	SizeBytes uint64
	Key       string   // resource id at the key broker
	Users     []string // services (or "agent") that may write it
	Range     hcl.Range
}

var (
	volumeSchema = &hcl.BodySchema{Attributes: attrs("size!", "key!", "users!")}
)

// parseVolumeSize parses "512M" or "2G" into bytes.
func parseVolumeSize(s string) (uint64, error) {
	n, ok := sizeMiB(s)
	if !ok {
		return 0, fmt.Errorf("size %q is not a size: write a whole number with an M or G suffix, e.g. \"512M\" or \"2G\"", s)
	}
	n <<= 20
	if n < policy.MinVolumeSize || n > policy.MaxVolumeSize {
		return 0, fmt.Errorf("size %q is out of range: use %dM to %dG", s, policy.MinVolumeSize>>20, policy.MaxVolumeSize>>30)
	}
	return n, nil
}

// decodeVolumes decodes the volume blocks; services are the declared
// service names (users may also name "agent").
func (l *loader) decodeVolumes(hbs []*hcl.Block, services map[string]hcl.Range) []Volume {
	var out []Volume
	names := map[string]hcl.Range{}
	for _, hb := range hbs {
		name := hb.Labels[0]
		if !policy.ValidName(name) {
			l.diags.add(errorf(rangePtr(hb.LabelRanges[0]), "Invalid volume name",
				"Volume name %q must match %s (lowercase letter first, at most 36 characters); it is also the mount directory %s.", name, policy.NamePattern, policy.VolumeMount("NAME")))
			continue
		}
		if !l.unique("volume", name, hb, names) {
			continue
		}
		b := l.open(hb, "volume."+name, volumeSchema)
		v := Volume{Name: name, Range: hb.DefRange, Size: b.str("size", ""), Key: b.str("key", ""), Users: b.strList("users")}
		if b.isSet("size") {
			n, err := parseVolumeSize(v.Size)
			if b.check("size", err == nil, "Invalid volume size", "%v.", err) {
				v.SizeBytes = n
			}
		}
		if b.isSet("key") {
			err := secret.CheckID(v.Key)
			b.check("key", err == nil, "Invalid volume key", "key is the volume key's resource id at the key broker: %v, e.g. \"tdforge/dev/state\".", err)
		}
		if b.isSet("users") {
			b.check("users", len(v.Users) > 0, "Empty users", "users must name the services that write volume %q, e.g. [\"agent\"].", name)
			seen := map[string]bool{}
			for _, u := range v.Users {
				if _, ok := services[u]; !ok && u != policy.AgentUser {
					b.fail("users", "Reference to undeclared service",
						"volume %q names user %q, which is neither \"agent\" nor a declared service. %s", name, u, declared("services", services))
					break
				}
				if seen[u] {
					b.fail("users", "Duplicate user", "volume %q lists user %q twice; list each once.", name, u)
					break
				}
				seen[u] = true
			}
		}
		out = append(out, v)
	}
	return out
}
