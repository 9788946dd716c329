package e2e

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/image/crypt"
	"github.com/tdforge/tdforge/internal/inputs/secret"
)

type partition struct {
	Name       string `json:"name"`
	StartLBA   uint64 `json:"start_lba"`
	Size       uint64 `json:"size"`
	DataSize   uint64 `json:"data_size"`
	HashOffset uint64 `json:"hash_offset"`
}

func partitions(t *testing.T, dir string) map[string]partition {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, "builder"), "inspect", "--json", dir).Output()
	if err != nil {
		t.Fatalf("builder inspect: %v", err)
	}
	var in struct {
		Payloads []partition `json:"payloads"`
	}
	if err := json.Unmarshal(out, &in); err != nil {
		t.Fatal(err)
	}
	m := map[string]partition{}
	for _, p := range in.Payloads {
		m[p.Name] = p
	}
	return m
}

// wantRejected attests v against ref ("" for the image's own) and fails
// the test unless the verdict is "not trusted" with a mismatch in register
// naming one of names; change says what the test did to the VM.
func wantRejected(t *testing.T, v *vm, ref, change, register string, names ...string) {
	t.Helper()
	r, code, out := v.attest(t, ref)
	if code != 1 || r.Trusted {
		t.Fatalf("%s verified (exit %d):\n%s", change, code, out)
	}
	for _, n := range names {
		if mismatch(r, register, n) {
			return
		}
	}
	t.Fatalf("no %s mismatch naming %s:\n%s", register, strings.Join(names, " or "), out)
}

func mismatch(r *verifierResult, register, what string) bool {
	for _, m := range r.Mismatches {
		if strings.EqualFold(m.Register, register) && (strings.Contains(m.Description, what) || m.Component == what) {
			return true
		}
	}
	return false
}

// TestTamperModelData flips one byte of the model's encrypted weights on
// the payload disk: dm-verity (under dm-crypt) turns the read into an I/O
// error, so no garbage plaintext reaches Ollama, the chat fails with a
// clear error, and nothing serves wrong weights. The image itself still
// verifies (the host changed data, not what was measured).
func TestTamperModelData(t *testing.T) {
	img := copyImage(t, devImage)
	p := partitions(t, img)["model"]
	disk := filepath.Join(img, "disk.raw")
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	start := int64(p.StartLBA * 512)
	data := make([]byte, p.DataSize)
	if _, err := f.ReadAt(data, start); err != nil {
		t.Fatal(err)
	}
	// The data area is ciphertext: find the GGUF in its plaintext (the
	// public dev key) and flip the ciphertext byte there.
	res, err := secret.Load(filepath.Join(repoRoot, "manifests", "dev-secrets"), "tdforge/dev/model")
	if err != nil {
		t.Fatal(err)
	}
	if err := crypt.Decrypt(res.Value, data, 0); err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, []byte("GGUF"))
	if i < 0 {
		t.Fatal("no GGUF blob in the decrypted model partition")
	}
	off := start + int64(i) + 64*1024 // past the GGUF header, inside the tensors
	b := []byte{0}
	f.ReadAt(b, off)
	b[0] ^= 0x55
	f.WriteAt(b, off)
	f.Close()

	v := boot(t, img, bootOpts{})
	r, code, out := v.attest(t, filepath.Join(devImage, "reference-values.json"))
	if code != 0 || !r.Trusted {
		t.Fatalf("the measured image should still verify (exit %d):\n%s", code, out)
	}
	code, body, err := postJSON(insecureClient(120*time.Second), v.url("/api/generate"), generateBody)
	if err == nil && code == 200 {
		var g struct{ Response string }
		json.Unmarshal(body, &g)
		t.Fatalf("chat succeeded on corrupted weights: %q", g.Response)
	}
	t.Logf("chat on corrupted weights: HTTP %d %s", code, body)
	// The verifier still verifies the image but reports the service down.
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(r.Service.Error, "does not load") && time.Now().Before(deadline) {
		time.Sleep(2 * time.Second)
		r, _, out = v.attest(t, filepath.Join(devImage, "reference-values.json"))
	}
	if r.Service.Ready || !strings.Contains(r.Service.Error, "model tiny:latest does not load") {
		t.Errorf("service not reported down: %+v\n%s", r.Service, out)
	}
	if !v.consoleHas("verity", 10*time.Second) {
		t.Errorf("no dm-verity error on the console:\n%s", v.tail())
	}
}

// TestTamperInitrd changes one byte of the boot policy inside the initramfs:
// RTMR2 no longer matches, and the verifier names the initrd event.
func TestTamperInitrd(t *testing.T) {
	img := copyImage(t, devImage)
	path := filepath.Join(img, "initrd.img")
	gz, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	old := []byte(`"version": "0.1.0"`)
	i := bytes.Index(raw, old)
	if i < 0 {
		t.Fatal("boot policy not found in the initramfs")
	}
	raw[i+len(old)-2] = '1' // 0.1.0 -> 0.1.1
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(raw)
	zw.Close()
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	v := boot(t, img, bootOpts{})
	wantRejected(t, v, filepath.Join(devImage, "reference-values.json"), "tampered initrd", "RTMR2", "initrd")
	// The broker refused the key, naming the first register that differs:
	// RTMR1, as QEMU patches the initrd's new size into the kernel's setup
	// header (RTMR1 measures that kernel). The model stays locked.
	wantLocked(t, v, "broker refused: RTMR1 mismatch")
	wantBrokerRefused(t, v, "RTMR1")
}

// wantBrokerRefused checks the broker's log names the refusal and register.
func wantBrokerRefused(t *testing.T, v *vm, register string) {
	t.Helper()
	if log := v.broker.text(); !strings.Contains(log, "refused: "+register+": ") || strings.Contains(log, "released") {
		t.Errorf("the broker's log does not name a refusal for %s:\n%s", register, log)
	}
}

// TestTamperCmdline boots with a different kernel command line: RTMR2
// mismatch naming the command-line event.
func TestTamperCmdline(t *testing.T) {
	cl, _ := os.ReadFile(filepath.Join(devImage, "cmdline.txt"))
	v := boot(t, devImage, bootOpts{cmdline: strings.TrimSpace(string(cl)) + " init_on_free=0"})
	wantRejected(t, v, "", "changed cmdline", "RTMR2", "cmdline")
	wantLocked(t, v, "broker refused: RTMR2 mismatch")
	wantBrokerRefused(t, v, "RTMR2")
}

// TestSwapModel replaces the model partition with another valid model (a
// rebuild with a different tiny model) in the same slot: RTMR3 mismatch
// naming payload:model. The other image itself, booted against a broker
// that knows only the dev image, gets no key.
func TestSwapModel(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repoRoot, "manifests", "dev.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(src), "seed     = 1", "seed     = 2", 1)
	s = strings.Replace(s, `path = "../webui"`, `path = "`+filepath.Join(repoRoot, "webui")+`"`, 1)
	if s == string(src) {
		t.Fatal("could not derive the second manifest")
	}
	mdir := t.TempDir()
	os.WriteFile(filepath.Join(mdir, "other.hcl"), []byte(s), 0o644)
	other := filepath.Join(t.TempDir(), "other")
	cmd := exec.Command(filepath.Join(binDir, "builder"), "build", "--secrets", "manifests/dev-secrets", "-o", other, filepath.Join(mdir, "other.hcl"))
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the other model: %v\n%s", err, out)
	}
	a, b := partitions(t, devImage)["model"], partitions(t, other)["model"]
	if b.Size > a.Size {
		t.Fatalf("other model partition (%d B) does not fit the slot (%d B)", b.Size, a.Size)
	}
	img := copyImage(t, devImage)
	blob := make([]byte, b.Size)
	of, _ := os.Open(filepath.Join(other, "disk.raw"))
	of.ReadAt(blob, int64(b.StartLBA*512))
	of.Close()
	df, _ := os.OpenFile(filepath.Join(img, "disk.raw"), os.O_RDWR, 0)
	df.WriteAt(blob, int64(a.StartLBA*512))
	df.Close()

	v := boot(t, img, bootOpts{})
	wantRejected(t, v, filepath.Join(devImage, "reference-values.json"), "swapped model", "RTMR3", "payload:model")
	// initd names the failing payload and does not start what needs it;
	// the agent still runs so the failure is attested.
	for _, want := range []string{"initd: payload model FAILED", "initd: service ollama NOT started: payload(s) model failed"} {
		if !v.consoleHas(want, 5*time.Second) {
			t.Errorf("console lacks %q:\n%s", want, v.tail())
		}
	}
	v.kill()

	// Wrong image: the other image's TD asks for the same resource from a
	// broker that knows only the dev image, and is refused.
	// Its initrd (boot policy) differs in size too, so RTMR1 (the kernel
	// with QEMU's setup-header patch) is the first register that differs.
	w := boot(t, other, bootOpts{refs: filepath.Join(devImage, "reference-values.json")})
	wantLocked(t, w, "broker refused: RTMR1 mismatch")
	wantBrokerRefused(t, w, "RTMR1")
}

// TestHostChangesACPI boots the image with one more device than the platform
// profile describes: QEMU's ACPI tables change, the simulated firmware
// measures what QEMU provided (as TDVF does), and the verifier reports an
// RTMR0 mismatch naming the ACPI event. Values taken from the guest's own
// log would have hidden this; the reference pins them per platform.
func TestHostChangesACPI(t *testing.T) {
	v := boot(t, devImage, bootOpts{device: "virtio-rng-pci"})
	if !v.consoleHas("differs from the platform profile", 10*time.Second) {
		t.Errorf("the simulated firmware did not notice the changed ACPI tables:\n%s", v.tail())
	}
	wantRejected(t, v, "", "changed VM", "RTMR0", "acpi", "ACPI")
}
