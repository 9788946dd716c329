package build

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/mod/semver"

	"github.com/tdforge/tdforge/internal/image/crypt"
	"github.com/tdforge/tdforge/internal/inputs/secret"
	"github.com/tdforge/tdforge/internal/manifest"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// ErrNoSecrets is returned when a manifest encrypts a payload and the run
// has no secrets directory.
var ErrNoSecrets = errors.New("no secrets directory")

// payloadKey returns the dm-crypt key of an encrypted payload from the
// secrets directory (Options.Secrets): DIR/<resource id>, a key-broker
// resource file (package secret). A build creates a missing file with a
// fresh random key that allows this image at compatible versions; a
// measurement never creates one. The key reaches gptdisk only: it is
// never written to the image, the reference values, the boot policy or a
// log.
func (p *pipeline) payloadKey(pl manifest.Payload) ([]byte, error) {
	if p.o.Secrets == "" {
		return nil, noSecrets(pl)
	}
	return p.resourceKey(fmt.Sprintf("payload %q", pl.Name), pl.Encryption.Key)
}

// volumeKey checks, and creates when missing, the key-broker resource of
// sealed volume v (Options.Secrets), as payloadKey does. The builder never
// uses the key: the guest derives the volume's dm-crypt and dm-integrity
// keys from it (initd/volume). Without a secrets directory a build only
// says where the broker must find it.
func (p *pipeline) volumeKey(v manifest.Volume) error {
	if p.o.Secrets == "" {
		if p.publishing {
			fmt.Fprintf(p.o.Log, "volume %s: no --secrets directory, so its key %s was not checked; the key broker must hold it\n", v.Name, v.Key)
		}
		return nil
	}
	key, err := p.resourceKey(fmt.Sprintf("volume %q", v.Name), v.Key)
	if !p.publishing && errors.Is(err, secret.ErrNotExist) {
		return nil
	}
	clear(key)
	return err
}

// resourceKey loads (or, when building, creates) resource id for what.
func (p *pipeline) resourceKey(what, id string) ([]byte, error) {
	img := p.m.Image
	r, err := secret.Load(p.o.Secrets, id)
	switch {
	case errors.Is(err, secret.ErrNotExist) && p.publishing:
		r, err = secret.Create(p.o.Secrets, id, []secret.Grant{{Image: img.Name, Versions: compatibleVersions(img.Version)}})
		if err != nil {
			return nil, fmt.Errorf("%s: creating its key: %w", what, err)
		}
		fmt.Fprintf(p.o.Log, "%s: created a new key %s (mode 0600); keep it: only images built with it can use it\n", what, secret.Path(p.o.Secrets, id))
	case err != nil:
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := r.Check(img.Dev); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if ok, why := r.Allows(img.Name, img.Version, img.Dev); !ok {
		return nil, fmt.Errorf("%s: the broker would never release its key to this image: %s; add this image to the file's \"allow\" list", what, why)
	}
	return r.Key()
}

func noSecrets(pl manifest.Payload) error {
	id := pl.Encryption.Key
	return fmt.Errorf("payload %q is encrypted with key %q: %w", pl.Name, id, ErrNoSecrets)
}

// compatibleVersions is the default "allow" constraint of a new key: the
// versions semantic versioning calls compatible with version (^version),
// or every version when version is not a semantic version.
func compatibleVersions(version string) []string {
	v := version
	if !strings.HasPrefix(v, "v") {
		v = "v" + v
	}
	if !semver.IsValid(v) || semver.Prerelease(v) != "" || semver.Build(v) != "" {
		return nil
	}
	var major, minor, patch int
	fmt.Sscanf(semver.Canonical(v), "v%d.%d.%d", &major, &minor, &patch)
	upper := fmt.Sprintf("%d.0.0", major+1)
	switch {
	case major == 0 && minor == 0:
		upper = fmt.Sprintf("0.0.%d", patch+1)
	case major == 0:
		upper = fmt.Sprintf("0.%d.0", minor+1)
	}
	return []string{">=" + strings.TrimPrefix(semver.Canonical(v), "v"), "<" + upper}
}

// encryptPolicy adds each encrypted payload's parameters to the boot
// policy and, when a payload is encrypted or a sealed volume takes its key
// from the broker, the key broker (once).
func (p *pipeline) encryptPolicy(pol *policy.Policy) {
	needBroker := len(p.m.Volumes) > 0
	for i := range pol.Payloads {
		mp := p.m.Payload(pol.Payloads[i].Name)
		if mp == nil || mp.Encryption == nil {
			continue
		}
		e := crypt.Params(mp.Encryption.Key)
		pol.Payloads[i].Encryption = &e
		needBroker = true
	}
	if kb := p.m.KeyBroker; kb != nil && needBroker {
		pol.KeyBroker = &policy.KeyBroker{URL: kb.URL, CASHA256: kb.CASHA256}
	}
}
