package build

import (
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/inputs/secret"
	"github.com/tdforge/tdforge/internal/manifest"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

func keyPipeline(dir string, img manifest.Image, publishing bool) *pipeline {
	return &pipeline{m: &manifest.Manifest{Image: img}, o: Options{Secrets: dir, Log: io.Discard}, publishing: publishing}
}

var encModel = manifest.Payload{Name: "model", Encryption: &manifest.Encryption{Key: "acme/models/llm"}}

func TestPayloadKey(t *testing.T) {
	dir := t.TempDir()
	img := manifest.Image{Name: "acme-ai", Version: "1.4.2"}

	// Measure never creates a key; its absence makes the payload missing.
	if _, err := keyPipeline(dir, img, false).payloadKey(encModel); !errors.Is(err, secret.ErrNotExist) {
		t.Fatalf("measure without the key file: %v", err)
	}
	if _, err := keyPipeline("", img, false).payloadKey(encModel); !errors.Is(err, ErrNoSecrets) || !strings.Contains(err.Error(), "no secrets directory") {
		t.Fatalf("no secrets directory: %v", err)
	}

	// A build creates it: 0600, allowing this image at compatible versions.
	k1, err := keyPipeline(dir, img, true).payloadKey(encModel)
	if err != nil || len(k1) != secret.KeySize {
		t.Fatalf("create: %v (%d bytes)", err, len(k1))
	}
	st, err := os.Stat(secret.Path(dir, "acme/models/llm"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", err, st.Mode())
	}
	r, _ := secret.Load(dir, "acme/models/llm")
	if want := []secret.Grant{{Image: "acme-ai", Versions: []string{">=1.4.2", "<2.0.0"}}}; !reflect.DeepEqual(r.Allow, want) || r.Dev {
		t.Fatalf("allow %+v dev %v", r.Allow, r.Dev)
	}
	// The next build reuses it.
	k2, err := keyPipeline(dir, img, true).payloadKey(encModel)
	if err != nil || string(k1) != string(k2) {
		t.Fatalf("second build: %v, same key %v", err, string(k1) == string(k2))
	}
	// A key file others may read is refused.
	os.Chmod(secret.Path(dir, "acme/models/llm"), 0o644)
	if _, err := keyPipeline(dir, img, true).payloadKey(encModel); err == nil || !strings.Contains(err.Error(), "run chmod 600") {
		t.Fatalf("key file mode 0644: %v", err)
	}
	os.Chmod(secret.Path(dir, "acme/models/llm"), 0o600)
	// An image the file does not allow is refused at build time: the
	// broker would never release the key to it.
	if _, err := keyPipeline(dir, manifest.Image{Name: "other", Version: "1.4.2"}, true).payloadKey(encModel); err == nil || !strings.Contains(err.Error(), "would never release") {
		t.Fatalf("other image: %v", err)
	}
	if _, err := keyPipeline(dir, manifest.Image{Name: "acme-ai", Version: "2.0.0"}, true).payloadKey(encModel); err == nil || !strings.Contains(err.Error(), "<2.0.0") {
		t.Fatalf("incompatible version: %v", err)
	}
}

// The committed dev secret: a dev image may use it, a production one not.
func TestDevSecretOnlyForDevImages(t *testing.T) {
	dev := manifest.Payload{Name: "model", Encryption: &manifest.Encryption{Key: "tdforge/dev/model"}}
	dir := "../../manifests/dev-secrets"
	if _, err := keyPipeline(dir, manifest.Image{Name: "tdforge-dev", Version: "0.1.0", Dev: true}, true).payloadKey(dev); err != nil {
		t.Fatalf("dev image: %v", err)
	}
	_, err := keyPipeline(dir, manifest.Image{Name: "tdforge-dev", Version: "0.1.0"}, true).payloadKey(dev)
	if !errors.Is(err, secret.ErrDevSecret) {
		t.Fatalf("production image with the dev secret: %v", err)
	}
}

func TestCompatibleVersions(t *testing.T) {
	for v, want := range map[string][]string{
		"1.4.2": {">=1.4.2", "<2.0.0"}, "v2.0.0": {">=2.0.0", "<3.0.0"}, "0.1.0": {">=0.1.0", "<0.2.0"},
		"0.0.3": {">=0.0.3", "<0.0.4"}, "1.0": {">=1.0.0", "<2.0.0"}, "2025.01": nil, "1.0.0-rc1": nil, "nightly": nil,
	} {
		if got := compatibleVersions(v); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %v, want %v", v, got, want)
		}
	}
}

// TestEncryptPolicy: the broker reaches the policy when a payload is
// encrypted or a volume is sealed, and not otherwise.
func TestEncryptPolicy(t *testing.T) {
	kb := &manifest.KeyBroker{URL: "https://10.0.2.2:8444", CASHA256: strings.Repeat("0f", 32)}
	plain := manifest.Payload{Name: "ui"}
	vol := []manifest.Volume{{Name: "state", Key: "acme/state/v", Users: []string{"agent"}}}
	for _, c := range []struct {
		name     string
		payloads []manifest.Payload
		volumes  []manifest.Volume
		broker   bool
	}{
		{"nothing encrypted", []manifest.Payload{plain}, nil, false},
		{"encrypted payload", []manifest.Payload{plain, encModel}, nil, true},
		{"volume only", []manifest.Payload{plain}, vol, true},
		{"both", []manifest.Payload{encModel}, vol, true},
	} {
		p := &pipeline{m: &manifest.Manifest{Payloads: c.payloads, Volumes: c.volumes, KeyBroker: kb}}
		pol := &policy.Policy{}
		for _, pl := range c.payloads {
			pol.Payloads = append(pol.Payloads, policy.Payload{Name: pl.Name})
		}
		p.encryptPolicy(pol)
		if got := pol.KeyBroker != nil; got != c.broker || (got && (pol.KeyBroker.URL != kb.URL || pol.KeyBroker.CASHA256 != kb.CASHA256)) {
			t.Errorf("%s: key broker %+v", c.name, pol.KeyBroker)
		}
		for i, pl := range c.payloads {
			if enc := pol.Payloads[i].Encryption; (enc != nil) != (pl.Encryption != nil) || (enc != nil && enc.Resource != pl.Encryption.Key) {
				t.Errorf("%s: payload %s encryption %+v", c.name, pl.Name, enc)
			}
		}
	}
}
