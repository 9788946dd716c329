package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/image/crypt"
	"github.com/tdforge/tdforge/internal/image/gptdisk"
	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/inputs/secret"
	"github.com/tdforge/tdforge/internal/ollama/gguf"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// TestBuildEncryptedDevImage builds manifests/dev.hcl (its model payload
// encrypted with the fixed dev secret; inputs from the default cache, as
// `make image` does) and checks that:
//   - without --secrets the build fails at once, naming the flag, and
//     measure reports the model missing; with it, measure agrees;
//   - no 128-byte run of the GGUF's tensor data appears anywhere in
//     disk.raw (every 64-byte aligned window of it is searched for at every
//     disk offset), while the model partition decrypted with the dev key
//     holds it;
//   - the key appears in no output file, the build log or the command's
//     output, raw, hex or base64;
//   - the boot policy names the key broker and the payload's encryption.
//
// Before the model was encrypted, the first check found the weights.
func TestBuildEncryptedDevImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the dev image")
	}
	manifest := filepath.Join("..", "manifests", "dev.hcl")
	secrets := filepath.Join("..", "manifests", "dev-secrets")
	out := filepath.Join(t.TempDir(), "img")

	r := run(t, runBuild, "-o", out, manifest)
	if r.code != cli.ExitFail || !strings.Contains(r.stderr, `payload "model" is encrypted with key "tdforge/dev/model"`) || !strings.Contains(r.stderr, "pass --secrets DIR") {
		t.Fatalf("build without --secrets: %+v", r)
	}
	// measure without the key: the model is a missing input.
	r = run(t, runMeasure, manifest)
	if r.code != cli.ExitOK || !strings.Contains(r.stdout, `missing   payload "model": its key is not available`) || !strings.Contains(r.stdout, "RTMR3     unknown") {
		t.Fatalf("measure without --secrets: %+v", r)
	}
	r = run(t, runBuild, "--secrets", secrets, "-o", out, manifest)
	if r.code != cli.ExitOK {
		t.Fatalf("build: %+v", r)
	}
	build := r
	r = run(t, runMeasure, "--secrets", secrets, manifest)
	if regs := registers(r.stdout); r.code != cli.ExitOK || regs["rtmr3"] == "" || !strings.Contains(build.stdout, regs["rtmr3"]) || !strings.Contains(build.stdout, regs["rtmr2"]) {
		t.Fatalf("measure --secrets disagrees with the build: %+v\nbuild:\n%s", r, build.stdout)
	}
	r = build
	res, err := secret.Load(secrets, "tdforge/dev/model")
	if err != nil {
		t.Fatal(err)
	}
	key := res.Value

	// No plaintext: the generated model's tensor data (the file's last
	// 400 KiB; its ~490 KB are F32 weights).
	var model bytes.Buffer
	if err := gguf.GenerateTiny(&model, 1); err != nil {
		t.Fatal(err)
	}
	tensors := model.Bytes()[model.Len()-400<<10:]
	windows := map[string]int{}
	for o := 0; o+64 <= len(tensors); o += 64 {
		w := tensors[o : o+64]
		var seen [256]bool
		distinct := 0
		for _, c := range w {
			if !seen[c] {
				seen[c], distinct = true, distinct+1
			}
		}
		if distinct >= 16 { // not padding or a constant run, which any disk holds
			windows[string(w)] = o
		}
	}
	if len(windows) < len(tensors)/64/2 {
		t.Fatalf("only %d of %d tensor windows look like weights", len(windows), len(tensors)/64)
	}
	disk, err := os.ReadFile(filepath.Join(out, imagedir.Disk))
	if err != nil {
		t.Fatal(err)
	}
	for d := 0; d+64 <= len(disk); d++ {
		if o, ok := windows[string(disk[d:d+64])]; ok {
			t.Fatalf("disk.raw holds the model's tensor data in plaintext: disk offset %d = tensor bytes at %d", d, o)
		}
	}

	// Yet decrypting the model partition's data area with the dev key
	// gives an image holding the whole model.
	layout, err := gptdisk.ReadLayout(filepath.Join(out, imagedir.Payloads))
	if err != nil {
		t.Fatal(err)
	}
	mp, ok := layout.Partition("model")
	if !ok || !mp.Encrypted {
		t.Fatalf("model partition %+v", mp)
	}
	img := bytes.Clone(disk[mp.StartLBA*512 : mp.StartLBA*512+mp.DataSize])
	if err := crypt.Decrypt(key, img, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(img, model.Bytes()[model.Len()-400<<10:]) {
		t.Fatal("the decrypted model partition does not hold the model's tensor data")
	}

	// The key nowhere.
	forms := map[string][]byte{
		"raw": key, "hex": []byte(hex.EncodeToString(key)), "HEX": []byte(strings.ToUpper(hex.EncodeToString(key))),
		"base64": []byte(base64.StdEncoding.EncodeToString(key)), "base64url": []byte(base64.RawURLEncoding.EncodeToString(key)),
		"key half": key[:32], "hex half": []byte(hex.EncodeToString(key[32:])),
	}
	check := func(name string, data []byte) {
		for f, b := range forms {
			if bytes.Contains(data, b) {
				t.Errorf("%s holds the key (%s)", name, f)
			}
		}
	}
	check("stdout", []byte(r.stdout))
	check("stderr", []byte(r.stderr))
	log, err := os.ReadFile(out + ".build.log")
	if err != nil {
		t.Fatal(err)
	}
	check("build log", log)
	n := 0
	filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		check(p, b)
		n++
		return nil
	})
	if n < 8 {
		t.Fatalf("searched only %d output files", n)
	}

	r = run(t, runInspect, out)
	if r.code != cli.ExitOK || !strings.Contains(r.stdout, "encrypted aes-xts-plain64, 512-bit key tdforge/dev/model from the key broker") ||
		!strings.Contains(r.stdout, "broker    https://10.0.2.2:8444 (TLS pin sha256:2aad06e1") {
		t.Errorf("inspect: %+v", r)
	}
	check("inspect output", []byte(r.stdout))

	pf, err := os.Open(filepath.Join(out, imagedir.Policy))
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	pol, err := policy.Decode(pf)
	if err != nil {
		t.Fatal(err)
	}
	if pol.KeyBroker == nil || pol.KeyBroker.URL != "https://10.0.2.2:8444" {
		t.Errorf("policy key_broker %+v", pol.KeyBroker)
	}
	for _, p := range pol.Payloads {
		if enc := p.Encryption != nil; enc != (p.Name == "model") {
			t.Errorf("payload %s encryption %+v", p.Name, p.Encryption)
		}
	}
}
