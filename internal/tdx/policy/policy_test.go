package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"os"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/event"
)

func validPolicy() *Policy {
	return &Policy{
		Version: SchemaVersion,
		Image:   Image{Name: "img", Version: "1.0", Dev: true},
		TDX:     TDX{Simulate: true},
		Kernel:  Kernel{Release: "6.1", Modules: []string{"/lib/modules/6.1/kernel/fs/erofs/erofs.ko"}},
		Disk:    Disk{GUID: "5e20248e-6d54-84d4-b905-4ffd7e51bc96"},
		Payloads: []Payload{{
			Name: "model", Partition: 1, PartitionGUID: "a5b6cc80-77e1-8094-89b7-301d4b19aa08", FSType: "erofs",
			DataSize: 8192, HashOffset: 8192, DataBlockSize: 4096, HashBlockSize: 4096, HashAlg: "sha256",
			RootHash: strings.Repeat("ab", 32), Salt: strings.Repeat("cd", 32), MountPoint: "/payload/model",
		}},
		Network: Network{Mode: "static", Interface: "eth0", Address: "10.0.2.15/24", Gateway: "10.0.2.2"},
		Services: []Service{
			{Name: "ollama", Command: "/payload/ollama/bin/ollama", Args: []string{"serve"}, Env: map[string]string{"B": "2", "A": "1"},
				User: "ollama", UID: 1000, GID: 1000, After: []string{}, Payloads: []string{"model"}, Restart: "always"},
			{Name: "agent", Command: "/usr/bin/agent", Args: []string{}, Env: map[string]string{}, User: "agent", UID: 900, GID: 900,
				After: []string{"ollama"}, Payloads: []string{}, Restart: "always"},
		},
		Agent: Agent{Listen: ":8443", TLS: true, Upstream: "http://127.0.0.1:11434",
			Limits: Limits{NumCtx: 4096, NumPredict: 512, KeepAliveSeconds: 600}},
	}
}

// encrypt makes the policy's payload encrypted, with a key broker.
func encrypt(p *Policy) {
	p.KeyBroker = &KeyBroker{URL: "https://10.0.2.2:8444", CASHA256: strings.Repeat("0f", 32)}
	p.Payloads[0].Encryption = &Encryption{Cipher: EncryptionCipher, KeyBits: EncryptionKeyBits, SectorSize: EncryptionSectorSize,
		IVLargeSectors: true, Resource: "tdforge/dev/model"}
}

func TestMarshalDecodeRoundTrip(t *testing.T) {
	p := validPolicy()
	encrypt(p)
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"A": "1",`)) || !bytes.HasSuffix(b, []byte("}\n")) {
		t.Fatalf("not canonical (sorted env, trailing newline):\n%s", b)
	}
	q, err := Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := q.Marshal()
	if !bytes.Equal(b, b2) {
		t.Fatal("round trip changed the bytes")
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := validPolicy().Marshal()
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown field", strings.Replace(string(good), `"version": 1,`, `"version": 1, "shell": "/bin/sh",`, 1), "unknown field"},
		{"trailing data", string(good) + "{}", "trailing data"},
		{"not json", "nope", "boot policy"},
	} {
		if _, err := Decode(strings.NewReader(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestValidateRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Policy)
		want string
	}{
		{"version", func(p *Policy) { p.Version = 2 }, "version 2"},
		{"simulate without dev", func(p *Policy) { p.Image.Dev = false }, "requires a dev image"},
		{"relative module", func(p *Policy) { p.Kernel.Modules = []string{"erofs.ko"} }, "absolute path"},
		{"bad payload name", func(p *Policy) { p.Payloads[0].Name = "Model!" }, "must match"},
		{"duplicate partition", func(p *Policy) { p.Payloads = append(p.Payloads, p.Payloads[0]); p.Payloads[1].Name = "other" }, "unique 1-based"},
		{"fstype", func(p *Policy) { p.Payloads[0].FSType = "ext4" }, "not supported"},
		{"verity params", func(p *Policy) { p.Payloads[0].HashAlg = "sha1" }, "sha256 with 4096-byte blocks"},
		{"hash before data", func(p *Policy) { p.Payloads[0].HashOffset = 4096 }, "hash_offset"},
		{"root hash", func(p *Policy) { p.Payloads[0].RootHash = "zz" }, "root_hash"},
		{"no disk guid", func(p *Policy) { p.Disk.GUID = "" }, "disk guid"},
		{"network mode", func(p *Policy) { p.Network.Mode = "bridge" }, "none, dhcp or static"},
		{"static address", func(p *Policy) { p.Network.Address = "10.0.2.15" }, "CIDR"},
		{"relative command", func(p *Policy) { p.Services[0].Command = "ollama" }, "absolute path"},
		{"root service", func(p *Policy) { p.Services[0].UID = 0 }, "non-root"},
		{"restart", func(p *Policy) { p.Services[0].Restart = "sometimes" }, "restart"},
		{"unknown payload", func(p *Policy) { p.Services[0].Payloads = []string{"weights"} }, "not in the policy"},
		{"unknown after", func(p *Policy) { p.Services[0].After = []string{"db"} }, "names no service"},
		{"cycle", func(p *Policy) { p.Services[0].After = []string{"agent"} }, "cycle"},
		{"plain http in production", func(p *Policy) { p.Image.Dev, p.TDX.Simulate, p.Agent.PlainHTTP = false, false, ":8080" }, "plain_http"},
		{"no tls in production", func(p *Policy) { p.Image.Dev, p.TDX.Simulate, p.Agent.TLS = false, false, false }, "TLS"},
		{"webui payload", func(p *Policy) { p.Agent.WebUIPayload = "ui" }, "webui_payload"},
		{"negative num_ctx limit", func(p *Policy) { p.Agent.Limits.NumCtx = -1 }, "agent limits num_ctx -1"},
		{"huge num_predict limit", func(p *Policy) { p.Agent.Limits.NumPredict = MaxLimitTokens + 1 }, "agent limits"},
		{"keep_alive limit", func(p *Policy) { p.Agent.Limits.KeepAliveSeconds = MaxLimitKeepAlive + 1 }, "keep_alive_seconds"},
		{"attestation service path", func(p *Policy) { p.Agent.AttestationService = "https://attest.example/v1" }, "base URL"},
		{"attestation service http in production", func(p *Policy) {
			p.Image.Dev, p.TDX.Simulate, p.Agent.AttestationService = false, false, "http://attest.example"
		}, "plain http is allowed only in a dev image"},
		{"encrypted without broker", func(p *Policy) { encrypt(p); p.KeyBroker = nil }, "names no key_broker"},
		{"broker over http", func(p *Policy) { encrypt(p); p.KeyBroker.URL = "http://10.0.2.2:8444" }, "https://host"},
		{"broker with path", func(p *Policy) { encrypt(p); p.KeyBroker.URL = "https://10.0.2.2:8444/kbs" }, "https://host"},
		{"broker pin", func(p *Policy) { encrypt(p); p.KeyBroker.CASHA256 = strings.Repeat("AB", 32) }, "ca_sha256"},
		{"DEV broker in production", func(p *Policy) {
			encrypt(p)
			p.Image.Dev, p.TDX.Simulate, p.KeyBroker.CASHA256 = false, false, DevBrokerCASHA256
		}, "DEV broker certificate deploy/dev-broker/tls.crt"},
		{"cipher", func(p *Policy) { encrypt(p); p.Payloads[0].Encryption.Cipher = "aes-cbc-essiv:sha256" }, "encryption must be aes-xts-plain64"},
		{"512-byte IV sectors", func(p *Policy) { encrypt(p); p.Payloads[0].Encryption.IVLargeSectors = false }, "iv_large_sectors true"},
		{"shared key", func(p *Policy) {
			encrypt(p)
			p.Payloads = append(p.Payloads, p.Payloads[0])
			p.Payloads[1].Name, p.Payloads[1].Partition = "model2", 2
		}, "share the key"},
		{"resource id", func(p *Policy) { encrypt(p); p.Payloads[0].Encryption.Resource = "../etc/passwd" }, "<repo>/<type>/<tag>"},
	} {
		p := validPolicy()
		tc.mod(p)
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestDevBrokerCASHA256: the constant is the digest of the DEV broker's
// certificate (whose key is public), and only a dev image may pin it.
func TestDevBrokerCASHA256(t *testing.T) {
	b, err := os.ReadFile("../../../deploy/dev-broker/tls.crt")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatal("deploy/dev-broker/tls.crt holds no PEM certificate")
	}
	sum := sha256.Sum256(blk.Bytes)
	if got := hex.EncodeToString(sum[:]); got != DevBrokerCASHA256 {
		t.Fatalf("DevBrokerCASHA256 = %s, but deploy/dev-broker/tls.crt's DER digest is %s", DevBrokerCASHA256, got)
	}
	if err := CheckKeyBrokerCA(DevBrokerCASHA256, false); err == nil || !strings.Contains(err.Error(), "mark the image dev") {
		t.Errorf("non-dev image: %v", err)
	}
	if err := CheckKeyBrokerCA(DevBrokerCASHA256, true); err != nil {
		t.Errorf("dev image: %v", err)
	}
	if err := CheckKeyBrokerCA(strings.Repeat("0f", 32), false); err != nil {
		t.Errorf("own broker: %v", err)
	}
	p := validPolicy()
	encrypt(p)
	p.KeyBroker.CASHA256 = DevBrokerCASHA256
	if err := p.Validate(); err != nil {
		t.Errorf("dev image pinning the DEV broker: %v", err)
	}
}

func TestStartOrderAndEvents(t *testing.T) {
	p := validPolicy()
	p.Services[0].After, p.Services[1].After = []string{"agent"}, []string{}
	order, err := p.StartOrder()
	if err != nil || strings.Join(order, ",") != "agent,ollama" {
		t.Fatalf("order %v %v", order, err)
	}
	ev, err := p.ExpectedEvents()
	if err != nil {
		t.Fatal(err)
	}
	if len(ev) != 2 || ev[0].Label() != "payload:model" || ev[0].Alg != event.AlgVerity || ev[1].Kind != event.KindConfig {
		t.Fatalf("events %v", ev)
	}
	// The config event covers what changes behaviour: a different env is a different RTMR3.
	d1, _ := p.ConfigDigest()
	p.Services[0].Env["OLLAMA_DEBUG"] = "1"
	d2, _ := p.ConfigDigest()
	if bytes.Equal(d1, d2) {
		t.Fatal("service env is not measured")
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"model": true, "web-ui_2": true, "a": true, strings.Repeat("a", 36): true,
		strings.Repeat("a", 37): false, "": false, "2model": false, "Model": false, "_x": false, "a.b": false, "a/b": false,
	} {
		if got := ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestCheckKeyBrokerURL: the one key broker URL rule, shared by the
// manifest and the boot policy.
func TestCheckKeyBrokerURL(t *testing.T) {
	for _, ok := range []string{"https://10.0.2.2:8444", "https://kbs.example/", "https://[fd00::2]:8444"} {
		if err := CheckKeyBrokerURL(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"http://10.0.2.2:8444", "https://10.0.2.2:8444/kbs", "https://u:p@10.0.2.2", "https://10.0.2.2?x=1", "https://10.0.2.2#f", "https://", "10.0.2.2:8444", "https://%zz"} {
		if err := CheckKeyBrokerURL(bad); err == nil || !strings.Contains(err.Error(), "must be https://host:port") {
			t.Errorf("%s: %v", bad, err)
		}
	}
}
