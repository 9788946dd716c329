package manifest

import (
	"github.com/hashicorp/hcl/v2"

	"github.com/tdforge/tdforge/internal/inputs/secret"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// KeyBroker is the `key_broker` block: the key broker (Trustee's KBS
// protocol) that releases the keys of encrypted payloads to an attested TD.
type KeyBroker struct {
	URL      string // https://host:port, as the guest reaches it
	CASHA256 string // hex SHA-256 of the DER of the broker's certificate or a CA in its chain
	Range    hcl.Range
}

// Encryption is a payload's `encryption` block.
type Encryption struct {
	Key   string // key-broker resource id <repo>/<type>/<tag>
	Range hcl.Range
}

var (
	keyBrokerSchema  = &hcl.BodySchema{Attributes: attrs("url!", "ca_sha256!")}
	encryptionSchema = &hcl.BodySchema{Attributes: attrs("key!")}
)

// decodeKeyBroker decodes the key_broker block; dev says whether the image
// is (or may be) a dev image, the only kind that may pin the DEV broker.
func (l *loader) decodeKeyBroker(hb *hcl.Block, dev bool) *KeyBroker {
	b := l.open(hb, "key_broker", keyBrokerSchema)
	k := &KeyBroker{Range: hb.DefRange, URL: b.str("url", ""), CASHA256: b.str("ca_sha256", "")}
	err := policy.CheckKeyBrokerURL(k.URL)
	b.check("url", err == nil, "Invalid key broker URL", "%v, e.g. \"https://10.0.2.2:8444\" (the host under QEMU user networking).", err)
	if b.check("ca_sha256", sha256RE.MatchString(k.CASHA256), "Invalid ca_sha256",
		"ca_sha256 must be the 64 lowercase hex digit SHA-256 of the DER of the broker's TLS certificate or of a CA certificate in its chain (openssl x509 -in tls.crt -outform DER | sha256sum); got %q.", k.CASHA256) {
		err := policy.CheckKeyBrokerCA(k.CASHA256, dev)
		b.check("ca_sha256", err == nil, "DEV key broker in a non-dev image", "%v (image { dev = true }).", err)
	}
	return k
}

// decodeEncryption decodes the single `encryption` block of payload body b,
// or returns nil.
func (l *loader) decodeEncryption(b *block) *Encryption {
	hb := b.single("encryption")
	if hb == nil {
		return nil
	}
	eb := l.open(hb, b.path+".encryption", encryptionSchema)
	e := &Encryption{Range: hb.DefRange, Key: eb.str("key", "")}
	if err := secret.CheckID(e.Key); err != nil {
		eb.check("key", false, "Invalid key resource id",
			"key %q names the payload's key at the key broker and the file DIR/<id> under builder build --secrets DIR: %v, e.g. \"tdforge/dev/model\".", e.Key, err)
	}
	return e
}

// checkEncryption requires a key_broker block when a payload is encrypted,
// and a key per payload: with one key, equal plaintext sectors at the same
// index of two payloads would give equal ciphertext (XTS tweaks restart at
// sector 0 in each).
func (l *loader) checkEncryption(m *Manifest) {
	keys := map[string]string{}
	for _, p := range m.Payloads {
		if p.Encryption == nil {
			continue
		}
		if other, ok := keys[p.Encryption.Key]; ok && p.Encryption.Key != "" {
			l.diags.add(errorf(rangePtr(p.Encryption.Range), "Key shared by two payloads",
				"payloads %q and %q are both encrypted with key %q; give each payload its own key resource (e.g. %q).", other, p.Name, p.Encryption.Key, p.Encryption.Key+"-"+p.Name))
		}
		keys[p.Encryption.Key] = p.Name
		if m.KeyBroker == nil {
			l.diags.add(errorf(rangePtr(p.Encryption.Range), "Encrypted payload without a key broker",
				"payload %q is encrypted, so the guest must fetch its key from a key broker; add a key_broker block with url and ca_sha256 (docs/manifest.md).", p.Name))
		}
	}
	for _, v := range m.Volumes {
		if other, ok := keys[v.Key]; ok && v.Key != "" {
			l.diags.add(errorf(rangePtr(v.Range), "Key shared by a volume",
				"volume %q uses key %q, which %q already uses; give each volume its own key resource (e.g. %q).", v.Name, v.Key, other, v.Key+"-"+v.Name))
		}
		keys[v.Key] = "volume " + v.Name
		if m.KeyBroker == nil {
			l.diags.add(errorf(rangePtr(v.Range), "Sealed volume without a key broker",
				"volume %q is sealed with a key the guest must fetch from a key broker; add a key_broker block with url and ca_sha256 (docs/manifest.md).", v.Name))
		}
	}
}
