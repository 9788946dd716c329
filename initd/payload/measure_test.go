package payload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/guest/rtmr"
	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/internal/tdx/sim"
)

type fakeVerity struct {
	fail    map[string]bool
	calls   []string
	removed []string
}

func (f *fakeVerity) FindPartition(guid string, index int) (string, error) {
	f.calls = append(f.calls, fmt.Sprintf("find %s %d", guid, index))
	return fmt.Sprintf("/dev/vda%d", index), nil
}

func (f *fakeVerity) Setup(name, dev string, p policy.Payload) (string, error) {
	f.calls = append(f.calls, "setup "+name+" "+dev+" "+p.RootHash)
	if f.fail[name] {
		return "", errors.New("verity: root hash mismatch")
	}
	return "/dev/mapper/" + name, nil
}

func (f *fakeVerity) Remove(name string) error { f.removed = append(f.removed, name); return nil }

func testPolicy(t *testing.T, mountRoot string) *policy.Policy {
	pl := func(name string, part int, hashByte string) policy.Payload {
		return policy.Payload{Name: name, Partition: part, PartitionGUID: fmt.Sprintf("00000000-0000-0000-0000-00000000000%d", part),
			FSType: "erofs", DataSize: 8192, HashOffset: 8192, DataBlockSize: 4096, HashBlockSize: 4096,
			HashAlg: "sha256", RootHash: strings.Repeat(hashByte, 32), Salt: "00", MountPoint: filepath.Join(mountRoot, name)}
	}
	p := &policy.Policy{Version: 1, Image: policy.Image{Name: "t", Version: "1", Dev: true}, TDX: policy.TDX{Simulate: true},
		Disk:     policy.Disk{GUID: "11111111-2222-3333-4444-555555555555"},
		Payloads: []policy.Payload{pl("ollama", 1, "aa"), pl("model", 2, "bb"), pl("webui", 3, "cc")},
		Network:  policy.Network{Mode: "none"},
		Services: []policy.Service{{Name: "agent", Command: "/bin/agent", User: "agent", UID: 1000, GID: 1000, Restart: "always"}},
		Agent:    policy.Agent{Listen: ":8443"}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	return p
}

func simBackend(t *testing.T) rtmr.Backend {
	dir := t.TempDir()
	z := strings.Repeat("00", 48)
	if err := sim.SaveRegisters(dir, &sim.Registers{Platform: sim.Platform{RTMR: [3]string{z, z, z}, MRTD: z}, RTMR3: z}); err != nil {
		t.Fatal(err)
	}
	be, err := sim.OpenRTMRs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return be
}

func TestPassHealthy(t *testing.T) {
	p := testPolicy(t, t.TempDir())
	run := filepath.Join(t.TempDir(), "tdforge")
	var mounts []string
	var console bytes.Buffer
	be := simBackend(t)
	pass := &Pass{Policy: p, Backend: be, Verity: &fakeVerity{}, RunDir: run, FileGID: os.Getgid(), Console: &console,
		Mount: func(dev, mp, fst string) error { mounts = append(mounts, dev+" "+mp+" "+fst); return nil }}
	res, err := pass.Run()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Mounted) != 3 || len(mounts) != 3 || !strings.HasPrefix(mounts[1], "/dev/mapper/model ") {
		t.Fatalf("mounted %v via %v", res.Mounted, mounts)
	}
	if wantReg := healthyRTMR3(t, p); res.RTMR3 != wantReg {
		t.Fatalf("RTMR3 %x, want ExpectedEvents replay %x", res.RTMR3, wantReg)
	}
	raw, err := os.ReadFile(filepath.Join(run, LogCEL))
	if err != nil {
		t.Fatal(err)
	}
	l, err := event.ParseLog(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Replay(res.RTMR3[:]); err != nil {
		t.Fatalf("log replay against register: %v", err)
	}
	want, _ := p.ExpectedEvents()
	got := l.Events()
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].String() != want[i].String() {
			t.Errorf("event %d = %s, want %s", i, got[i], want[i])
		}
	}
	js, _ := os.ReadFile(filepath.Join(run, LogJSON))
	if !strings.Contains(string(js), `"description":"payload:ollama"`) || !strings.Contains(string(js), `"kind":"config"`) {
		t.Fatalf("JSON log = %s", js)
	}
	st, _ := os.Stat(filepath.Join(run, LogCEL))
	if st.Mode().Perm() != 0o640 {
		t.Fatalf("log mode %v", st.Mode().Perm())
	}
	// A second pass in the same boot must not extend again.
	before, _ := be.Read(register.RTMR3)
	if _, err := pass.Run(); !errors.Is(err, ErrAlreadyMeasured) {
		t.Fatalf("second pass: %v", err)
	}
	if after, _ := be.Read(register.RTMR3); after != before {
		t.Fatal("second pass changed RTMR3")
	}
}

func TestPassPayloadFailureIsAttested(t *testing.T) {
	p := testPolicy(t, t.TempDir())
	fv := &fakeVerity{fail: map[string]bool{"model": true}}
	var console bytes.Buffer
	mountFail := map[string]bool{"webui": true}
	pass := &Pass{Policy: p, Backend: simBackend(t), Verity: fv, RunDir: t.TempDir(), FileGID: -1, Console: &console,
		Mount: func(dev, mp, fst string) error {
			if mountFail[filepath.Base(mp)] {
				return errors.New("erofs: bad superblock")
			}
			return nil
		}}
	res, err := pass.Run()
	if err != nil {
		t.Fatal(err)
	}
	if !res.Mounted["ollama"] || res.Mounted["model"] || res.Mounted["webui"] || len(res.Failed) != 2 {
		t.Fatalf("mounted %v failed %v", res.Mounted, res.Failed)
	}
	if len(fv.removed) != 1 || fv.removed[0] != "webui" {
		t.Fatalf("verity devices removed after mount failure: %v", fv.removed)
	}
	for _, want := range []string{"payload model FAILED: dm-verity on /dev/vda2: verity: root hash mismatch", "payload webui FAILED: mount /dev/mapper/webui"} {
		if !strings.Contains(console.String(), want) {
			t.Errorf("console lacks %q:\n%s", want, console.String())
		}
	}
	evs := res.Log.Events()
	kinds := []string{}
	for _, e := range evs {
		kinds = append(kinds, e.Label())
	}
	if strings.Join(kinds, ",") != "payload:ollama,payload-failed:model,payload-failed:webui,config:runtime" {
		t.Fatalf("events %v", kinds)
	}
	if evs[1].DigestString() != "verity-sha256:"+strings.Repeat("bb", 32) {
		t.Fatalf("failed event carries %s, want the policy root hash", evs[1].DigestString())
	}
	checkMeasuredDeparture(t, p, res, "a failed payload")
}

// healthyRTMR3 is RTMR3 after the events p predicts for a healthy boot.
func healthyRTMR3(t *testing.T, p *policy.Policy) [48]byte {
	t.Helper()
	evs, err := p.ExpectedEvents()
	if err != nil {
		t.Fatal(err)
	}
	v, err := event.Replay(evs)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// checkMeasuredDeparture checks that what (a failed or locked payload)
// moved res's RTMR3 off the healthy boot's, and that res's log replays
// to it.
func checkMeasuredDeparture(t *testing.T, p *policy.Policy, res *Result, what string) {
	t.Helper()
	if res.RTMR3 == healthyRTMR3(t, p) {
		t.Fatalf("%s left the healthy RTMR3", what)
	}
	if err := res.Log.Replay(res.RTMR3[:]); err != nil {
		t.Fatal(err)
	}
}

type failingBackend struct{ rtmr.Backend }

func (failingBackend) Extend(register.Register, [48]byte) error { return errors.New("EIO") }

func TestPassExtendFailureIsFatal(t *testing.T) {
	p := testPolicy(t, t.TempDir())
	var console bytes.Buffer
	pass := &Pass{Policy: p, Backend: failingBackend{simBackend(t)}, Verity: &fakeVerity{}, RunDir: t.TempDir(), FileGID: -1, Console: &console,
		Mount: func(string, string, string) error { return nil }}
	if _, err := pass.Run(); err == nil || !strings.Contains(err.Error(), "payload:ollama") {
		t.Fatalf("Run = %v, want extend failure naming the payload event", err)
	}
}

// fakeUnlocker releases keys for the payloads in keys, else refuses.
type fakeUnlocker struct {
	release map[string]bool
	logs    [][]byte
	locked  []string
}

func (f *fakeUnlocker) Unlock(_ context.Context, pl policy.Payload, vdev string, cel []byte) (string, error) {
	f.logs = append(f.logs, cel)
	if vdev != "/dev/mapper/"+pl.Name {
		return "", fmt.Errorf("unlock over %s, want the verity device", vdev)
	}
	if !f.release[pl.Name] {
		return "", errors.New("broker refused: RTMR2 mismatch")
	}
	return "/dev/mapper/" + pl.Name + "-crypt", nil
}

func (f *fakeUnlocker) Lock(pl policy.Payload) error {
	f.locked = append(f.locked, pl.Name)
	return nil
}

func encryptedPolicy(t *testing.T) *policy.Policy {
	p := testPolicy(t, t.TempDir())
	p.KeyBroker = &policy.KeyBroker{URL: "https://10.0.2.2:8444", CASHA256: strings.Repeat("ab", 32)}
	p.Payloads[1].Encryption = &policy.Encryption{Cipher: policy.EncryptionCipher, KeyBits: policy.EncryptionKeyBits,
		SectorSize: policy.EncryptionSectorSize, IVLargeSectors: true, Resource: "tdforge/dev/model"}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	return p
}

// An encrypted payload is measured (its ciphertext root) in the pass, so
// the key is asked for with the predicted RTMR3, and mounted by Open over
// the plaintext device.
func TestPassEncryptedReleased(t *testing.T) {
	p := encryptedPolicy(t)
	var mounts []string
	var console bytes.Buffer
	pass := &Pass{Policy: p, Backend: simBackend(t), Verity: &fakeVerity{}, RunDir: t.TempDir(), FileGID: -1, Console: &console,
		Mount: func(dev, mp, fst string) error { mounts = append(mounts, dev); return nil }}
	res, err := pass.Run()
	if err != nil {
		t.Fatal(err)
	}
	if res.Mounted["model"] || res.Pending["model"] != "/dev/mapper/model" || len(mounts) != 2 {
		t.Fatalf("after the pass: mounted %v pending %v mounts %v", res.Mounted, res.Pending, mounts)
	}
	wantReg := healthyRTMR3(t, p)
	if res.RTMR3 != wantReg {
		t.Fatal("the pass did not reach the predicted RTMR3 before the key request")
	}
	u := &fakeUnlocker{release: map[string]bool{"model": true}}
	if err := pass.Open(context.Background(), res, u); err != nil {
		t.Fatal(err)
	}
	if !res.Mounted["model"] || mounts[2] != "/dev/mapper/model-crypt" || len(res.Locked) != 0 {
		t.Fatalf("after Open: mounted %v locked %v mounts %v", res.Mounted, res.Locked, mounts)
	}
	if res.RTMR3 != wantReg {
		t.Fatal("a released payload changed RTMR3 from the prediction")
	}
	want, _ := p.ExpectedEvents()
	l, err := event.ParseLog(u.logs[0])
	if err != nil || len(l.Events()) != len(want) {
		t.Fatalf("the broker got a runtime log of %d events (%v), want all %d", len(l.Events()), err, len(want))
	}
}

// A refusal leaves the payload locked, attested after the config event,
// with its verity device removed and nothing mounted.
func TestPassEncryptedLocked(t *testing.T) {
	p := encryptedPolicy(t)
	fv := &fakeVerity{}
	var mounts []string
	var console bytes.Buffer
	pass := &Pass{Policy: p, Backend: simBackend(t), Verity: fv, RunDir: t.TempDir(), FileGID: -1, Console: &console,
		Mount: func(dev, mp, fst string) error { mounts = append(mounts, dev); return nil }}
	res, err := pass.Run()
	if err != nil {
		t.Fatal(err)
	}
	if err := pass.Open(context.Background(), res, &fakeUnlocker{}); err != nil {
		t.Fatal(err)
	}
	if res.Mounted["model"] || len(mounts) != 2 || res.Locked["model"] != "broker refused: RTMR2 mismatch" || len(fv.removed) != 1 {
		t.Fatalf("mounted %v locked %v mounts %v removed %v", res.Mounted, res.Locked, mounts, fv.removed)
	}
	var labels []string
	for _, e := range res.Log.Events() {
		labels = append(labels, e.String())
	}
	if got := strings.Join(labels[3:], ","); !strings.HasPrefix(got, "config:runtime ") || !strings.HasSuffix(got, ",payload-locked:model reason:broker refused: RTMR2 mismatch") {
		t.Fatalf("events %v", labels)
	}
	checkMeasuredDeparture(t, p, res, "a locked payload")
	// A key that does not open the payload (its plaintext does not mount)
	// locks it too, and removes the plaintext mapping.
	p2 := encryptedPolicy(t)
	pass2 := &Pass{Policy: p2, Backend: simBackend(t), Verity: &fakeVerity{}, RunDir: t.TempDir(), FileGID: -1, Console: &console,
		Mount: func(dev, mp, fst string) error {
			if strings.HasSuffix(dev, "-crypt") {
				return errors.New("erofs: bad superblock")
			}
			return nil
		}}
	res2, _ := pass2.Run()
	u := &fakeUnlocker{release: map[string]bool{"model": true}}
	if err := pass2.Open(context.Background(), res2, u); err != nil {
		t.Fatal(err)
	}
	if res2.Mounted["model"] || len(u.locked) != 1 || !strings.Contains(res2.Locked["model"], "does not open it") {
		t.Fatalf("mounted %v locked %v lock calls %v", res2.Mounted, res2.Locked, u.locked)
	}
}
