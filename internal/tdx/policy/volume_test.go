package policy

import (
	"bytes"
	"strings"
	"testing"
)

func volumePolicy() *Policy {
	p := validPolicy()
	p.Volumes = []Volume{{Name: "state", SizeBytes: 512 << 20, Key: "tdforge/dev/state", Users: []string{"agent"},
		UUID: VolumeUUID(p.Image.Name, "state"), Mount: VolumeMount("state")}}
	p.KeyBroker = &KeyBroker{URL: "https://10.0.2.2:8444", CASHA256: strings.Repeat("0f", 32)}
	return p
}

func TestVolumeRoundTrip(t *testing.T) {
	p := volumePolicy()
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	q, err := Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if v := q.AgentVolume(); v == nil || v.Mount != "/var/lib/tdforge/state" || v.UUID != p.Volumes[0].UUID {
		t.Fatalf("agent volume = %+v", v)
	}
	// No volumes: the field is omitted, so older policies keep their bytes.
	b, err = validPolicy().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("volumes")) {
		t.Fatal("a policy without volumes mentions them")
	}
}

func TestVolumeUUID(t *testing.T) {
	a, b := VolumeUUID("img", "state"), VolumeUUID("img", "state")
	if a != b || a == VolumeUUID("img2", "state") || a == VolumeUUID("img", "other") {
		t.Fatal("VolumeUUID is not a deterministic function of image and volume name")
	}
	if !ValidGUID(a) || a[14] != '8' {
		t.Fatalf("VolumeUUID = %q, want a version 8 UUID", a)
	}
}

func TestVolumeValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Volume)
		want string
	}{
		{"size", func(v *Volume) { v.SizeBytes = 1<<20 + 1 }, "whole number of MiB"},
		{"key", func(v *Volume) { v.Key = "a/../b" }, "resource id"},
		{"user", func(v *Volume) { v.Users = []string{"nobody"} }, `user "nobody" names no service`},
		{"users", func(v *Volume) { v.Users = nil }, "users is empty"},
		{"uuid", func(v *Volume) { v.UUID = "x" }, "uuid"},
		{"mount", func(v *Volume) { v.Mount = "/tmp/state" }, "must be /var/lib/tdforge/state"},
		{"name", func(v *Volume) { v.Name = "../x" }, "must match"},
	} {
		p := volumePolicy()
		tc.edit(&p.Volumes[0])
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	// initd could never obtain the key: refused.
	p := volumePolicy()
	p.KeyBroker = nil
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "no key_broker") {
		t.Errorf("volume without a key broker: %v", err)
	}
}
