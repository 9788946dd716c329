package ollamastore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/image/fstree"
	"github.com/tdforge/tdforge/internal/inputs/gobuild"
	"github.com/tdforge/tdforge/internal/ollama/gguf"
	"github.com/tdforge/tdforge/internal/testutil/netutil"
)

func tinyFile(t *testing.T) (string, string) {
	t.Helper()
	var b bytes.Buffer
	if err := gguf.GenerateTiny(&b, 1); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b.Bytes())
	return p, hex.EncodeToString(sum[:])
}

func tinyModel(p string) Model {
	return Model{
		Name: "tiny", Tag: "latest", GGUFPath: p,
		Template:  "{{ .Prompt }}",
		Params:    map[string]any{"num_ctx": 512, "stop": []string{"<s>", "</s>"}},
		System:    "You are tiny.",
		License:   "CC0",
		Epoch:     1700000000,
		ModelType: "124K",
	}
}

// tinyStore lays out the tiny model as a store in a fresh directory and
// returns the directory, the tree and the manifest digest.
func tinyStore(t *testing.T) (string, *fstree.Tree, string) {
	t.Helper()
	p, _ := tinyFile(t)
	tr, dig, err := Layout(tinyModel(p))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := tr.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	return dir, tr, dig
}

func file(t *testing.T, tr *fstree.Tree, p string) []byte {
	t.Helper()
	for _, e := range tr.Entries {
		if e.Path == p {
			if e.Source != "" {
				b, err := os.ReadFile(e.Source)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			return e.Data
		}
	}
	t.Fatalf("no entry %s", p)
	return nil
}

func TestLayout(t *testing.T) {
	p, sum := tinyFile(t)
	m := tinyModel(p)
	tr, dig, err := Layout(m)
	if err != nil {
		t.Fatal(err)
	}
	// Pinning the digest gives the same store without hashing.
	m.GGUFSHA256 = sum
	tr2, dig2, err := Layout(m)
	if err != nil || dig2 != dig || len(tr2.Entries) != len(tr.Entries) {
		t.Fatalf("pinned layout differs: %v %s %s", err, dig, dig2)
	}
	for i := range tr.Entries {
		a, b := tr.Entries[i], tr2.Entries[i]
		if a.Path != b.Path || a.Mode != b.Mode || a.Size != b.Size || !bytes.Equal(a.Data, b.Data) || a.Source != b.Source {
			t.Fatalf("entry %d differs: %+v vs %+v", i, a, b)
		}
	}
	if tr.Epoch != m.Epoch {
		t.Fatalf("epoch %d", tr.Epoch)
	}
	man := file(t, tr, "manifests/registry.ollama.ai/library/tiny/latest")
	if s := sha256.Sum256(man); hex.EncodeToString(s[:]) != dig {
		t.Fatal("returned digest is not the manifest's sha256")
	}
	if !bytes.HasPrefix(man, []byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:`)) ||
		!bytes.HasSuffix(man, []byte("}]}\n")) || bytes.Count(man, []byte("\n")) != 1 {
		t.Fatalf("manifest format: %s", man)
	}
	var mf Manifest
	if err := json.Unmarshal(man, &mf); err != nil {
		t.Fatal(err)
	}
	wantTypes := []string{ModelMediaType, TemplateMediaType, ParamsMediaType, SystemMediaType, LicenseMediaType}
	if len(mf.Layers) != len(wantTypes) {
		t.Fatalf("layers %+v", mf.Layers)
	}
	for i, l := range mf.Layers {
		if l.MediaType != wantTypes[i] {
			t.Fatalf("layer %d is %s, want %s", i, l.MediaType, wantTypes[i])
		}
		blob := file(t, tr, "blobs/sha256-"+strings.TrimPrefix(l.Digest, "sha256:"))
		if s := sha256.Sum256(blob); "sha256:"+hex.EncodeToString(s[:]) != l.Digest || int64(len(blob)) != l.Size {
			t.Fatalf("layer %d blob does not match its digest/size", i)
		}
	}
	if mf.Layers[0].Digest != "sha256:"+sum {
		t.Fatal("model layer digest is not the GGUF's")
	}
	if got := file(t, tr, "blobs/sha256-"+strings.TrimPrefix(mf.Layers[1].Digest, "sha256:")); string(got) != "{{ .Prompt }}" {
		t.Fatalf("template blob %q", got)
	}
	if got := file(t, tr, "blobs/sha256-"+strings.TrimPrefix(mf.Layers[2].Digest, "sha256:")); string(got) != "{\"num_ctx\":512,\"stop\":[\"\\u003cs\\u003e\",\"\\u003c/s\\u003e\"]}\n" {
		t.Fatalf("params blob %q", got)
	}
	cfg := file(t, tr, "blobs/sha256-"+strings.TrimPrefix(mf.Config.Digest, "sha256:"))
	wantCfg := `{"model_format":"gguf","model_family":"llama","model_families":["llama"],"model_type":"124K","file_type":"unknown","architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` +
		mf.Layers[0].Digest + `","` + mf.Layers[1].Digest + `","` + mf.Layers[2].Digest + `","` + mf.Layers[3].Digest + `","` + mf.Layers[4].Digest + `"]}}` + "\n"
	if string(cfg) != wantCfg {
		t.Fatalf("config\n got %s\nwant %s", cfg, wantCfg)
	}
	for _, e := range tr.Entries {
		if (e.Type == fstree.File && e.Mode != 0o644) || (e.Type == fstree.Dir && e.Mode != 0o755) {
			t.Fatalf("%s mode %o", e.Path, e.Mode)
		}
		if strings.HasPrefix(e.Path, "blobs/sha256-"+sum) && (e.Source != p || e.Data != nil) {
			t.Fatal("the GGUF must be referenced by path, not loaded")
		}
	}
}

// TestParamsMatchRegistry reproduces the published deepseek-r1 params blob
// (sha256 f4d24e91..., 148 bytes) from its values.
func TestParamsMatchRegistry(t *testing.T) {
	b, err := ParamsJSON(map[string]any{"stop": []string{"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"}})
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	if got := hex.EncodeToString(s[:]); got != "f4d24e9138dd4603380add165d2b0d970bef471fac194b436ebd50e6147c6588" || len(b) != 148 {
		t.Fatalf("params blob %s (%d bytes): %s", got, len(b), b)
	}
}

func TestLayoutErrors(t *testing.T) {
	p, sum := tinyFile(t)
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken.gguf")
	// A v3 header with no keys at all.
	os.WriteFile(broken, []byte("GGUF\x03\x00\x00\x00"+strings.Repeat("\x00", 16)), 0o644)
	tmpl := filepath.Join(dir, "template")
	os.WriteFile(tmpl, []byte("{{ .Prompt }}"), 0o644)
	tsum := sha256.Sum256([]byte("{{ .Prompt }}"))
	for name, tc := range map[string]struct {
		mut  func(*Model)
		want string
	}{
		"bad name":      {func(m *Model) { m.Name = "Tiny/../x" }, "model name"},
		"bad tag":       {func(m *Model) { m.Tag = "a b" }, "model tag"},
		"no gguf":       {func(m *Model) { m.GGUFPath = filepath.Join(dir, "nope") }, "no such file"},
		"missing keys":  {func(m *Model) { m.GGUFPath = broken }, `"general.architecture" is missing`},
		"size mismatch": {func(m *Model) { m.GGUFSize = 12 }, "pinned size is 12"},
		"bad sha":       {func(m *Model) { m.GGUFSHA256 = "XYZ" }, "64 lowercase hex"},
		"blob and text": {func(m *Model) { m.TemplateBlob = &Blob{Path: tmpl, SHA256: hex.EncodeToString(tsum[:])} }, "use one"},
		"blob size": {func(m *Model) {
			m.Template = ""
			m.TemplateBlob = &Blob{Path: tmpl, SHA256: hex.EncodeToString(tsum[:]), Size: 3}
		}, "pinned size is 3"},
		"params twice":   {func(m *Model) { m.ParamsBlob = &Blob{Path: tmpl, SHA256: sum} }, "use one"},
		"unencodable":    {func(m *Model) { m.Params = map[string]any{"x": make(chan int)} }, "params"},
		"not a gguf":     {func(m *Model) { m.GGUFPath = tmpl }, "not a GGUF"},
		"directory gguf": {func(m *Model) { m.GGUFPath = dir }, "not a regular file"},
	} {
		m := tinyModel(p)
		tc.mut(&m)
		_, _, err := Layout(m)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", name, err, tc.want)
		}
	}
}

// TestPinnedBlobs lays out a model from pre-made blobs and checks they are
// referenced by path with the pinned digests.
func TestPinnedBlobs(t *testing.T) {
	p, sum := tinyFile(t)
	dir := t.TempDir()
	mk := func(name, body string) *Blob {
		f := filepath.Join(dir, name)
		os.WriteFile(f, []byte(body), 0o644)
		s := sha256.Sum256([]byte(body))
		return &Blob{Path: f, SHA256: hex.EncodeToString(s[:])}
	}
	m := Model{Name: "pinned", GGUFPath: p, GGUFSHA256: sum,
		TemplateBlob: mk("t", "{{ .Prompt }}"), ParamsBlob: mk("p", "{\"num_ctx\":512}\n"), LicenseBlob: mk("l", "MIT")}
	tr, _, err := Layout(m)
	if err != nil {
		t.Fatal(err)
	}
	var mf Manifest
	json.Unmarshal(file(t, tr, ManifestPath("pinned", "latest")), &mf)
	want := []string{ModelMediaType + " " + sum, TemplateMediaType + " " + m.TemplateBlob.SHA256, ParamsMediaType + " " + m.ParamsBlob.SHA256, LicenseMediaType + " " + m.LicenseBlob.SHA256}
	for i, l := range mf.Layers {
		if got := l.MediaType + " " + strings.TrimPrefix(l.Digest, "sha256:"); i >= len(want) || got != want[i] {
			t.Fatalf("layer %d = %s", i, got)
		}
	}
}

func TestLayoutManifestRoundTrip(t *testing.T) {
	dir, tr, dig := tinyStore(t)
	var blobs []Blob
	ents, _ := os.ReadDir(filepath.Join(dir, "blobs"))
	for _, e := range ents {
		blobs = append(blobs, Blob{Path: filepath.Join(dir, "blobs", e.Name()), SHA256: strings.TrimPrefix(e.Name(), "sha256-")})
	}
	man := Blob{Path: filepath.Join(dir, ManifestPath("tiny", "latest")), SHA256: dig}
	tr2, dig2, err := LayoutManifest("copy", "v1", man, blobs, 5)
	if err != nil {
		t.Fatal(err)
	}
	if dig2 != dig || len(tr2.Entries) != len(tr.Entries) {
		t.Fatalf("round trip: %s vs %s, %d vs %d entries", dig2, dig, len(tr2.Entries), len(tr.Entries))
	}
	if !bytes.Equal(file(t, tr2, ManifestPath("copy", "v1")), file(t, tr, ManifestPath("tiny", "latest"))) {
		t.Fatal("manifest bytes changed")
	}
	// Every referenced blob must be supplied.
	if _, _, err := LayoutManifest("copy", "v1", man, blobs[1:], 5); err == nil || !strings.Contains(err.Error(), "no such blob was supplied") {
		t.Fatalf("missing blob: %v", err)
	}
	// The manifest itself is pinned.
	bad := man
	bad.SHA256 = strings.Repeat("0", 64)
	if _, _, err := LayoutManifest("copy", "v1", bad, blobs, 5); err == nil || !strings.Contains(err.Error(), "pinned") {
		t.Fatalf("wrong manifest digest: %v", err)
	}
	// A blob whose size disagrees with the manifest.
	wrong := append([]Blob{}, blobs...)
	for i := range wrong {
		if fi, _ := os.Stat(wrong[i].Path); fi.Size() > 1000 {
			continue
		}
		wrong[i].Size = 1
		break
	}
	if _, _, err := LayoutManifest("copy", "v1", man, wrong, 5); err == nil || !strings.Contains(err.Error(), "pinned size") {
		t.Fatalf("wrong size: %v", err)
	}
}

func post(ctx context.Context, url string, body any, out any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, rb)
	}
	return json.Unmarshal(rb, out)
}

// TestRealOllama serves the laid-out store with the pinned, statically
// linked Ollama v0.5.7 (built once and cached by gobuild) and generates from
// the tiny model.
func TestRealOllama(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var blog bytes.Buffer
	res, err := gobuild.Build(ctx, gobuild.Ollama057, "", &blog)
	if err != nil {
		t.Fatalf("building ollama: %v\n%s", err, blog.String())
	}
	store, _, _ := tinyStore(t)
	home := t.TempDir()
	addr := netutil.FreeAddr(t)
	cmd := exec.Command(res.Binary, "serve")
	cmd.Env = []string{"OLLAMA_MODELS=" + store, "HOME=" + home, "OLLAMA_HOST=" + addr, "PATH=/usr/bin:/bin", "OLLAMA_NOPRUNE=1"}
	var slog bytes.Buffer
	cmd.Stdout, cmd.Stderr = &slog, &slog
	// Own process group: ollama serve starts an "ollama runner" child that
	// must die with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			t.Logf("ollama log:\n%s", slog.String())
		}
	}()
	base := "http://" + addr
	var tags struct {
		Models []struct {
			Name   string `json:"name"`
			Digest string `json:"digest"`
		} `json:"models"`
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/tags", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&tags)
			resp.Body.Close()
			if err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("ollama did not answer /api/tags within 60s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(tags.Models) != 1 || tags.Models[0].Name != "tiny:latest" {
		t.Fatalf("/api/tags = %+v", tags)
	}
	var show struct {
		Template string         `json:"template"`
		System   string         `json:"system"`
		License  string         `json:"license"`
		Details  map[string]any `json:"details"`
		Info     map[string]any `json:"model_info"`
	}
	if err := post(ctx, base+"/api/show", map[string]any{"model": "tiny"}, &show); err != nil {
		t.Fatal(err)
	}
	if show.Template != "{{ .Prompt }}" || show.System != "You are tiny." || show.Details["family"] != "llama" || show.Info["llama.block_count"] != float64(2) {
		t.Fatalf("/api/show = %+v", show)
	}
	gen := func() string {
		var out struct {
			Response string `json:"response"`
			Done     bool   `json:"done"`
			EvalCnt  int    `json:"eval_count"`
		}
		gctx, gcancel := context.WithTimeout(ctx, 3*time.Minute)
		defer gcancel()
		err := post(gctx, base+"/api/generate", map[string]any{
			"model": "tiny", "prompt": "hello world", "stream": false,
			"options": map[string]any{"temperature": 0, "num_thread": 1, "num_predict": 32, "seed": 1},
		}, &out)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("generated %d tokens: %q", out.EvalCnt, out.Response)
		return out.Response
	}
	a := gen()
	b := gen()
	if strings.TrimSpace(a) == "" {
		t.Fatal("empty generation")
	}
	if a != b {
		t.Fatalf("generation not deterministic:\n%q\n%q", a, b)
	}
}
