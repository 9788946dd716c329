// Package ollamatest runs a real Ollama v0.5.7 (built reproducibly with
// internal/inputs/gobuild into the tdforge cache) serving the deterministic
// tiny GGUF model from internal/ollama/gguf, for the agent's integration
// tests and benchmarks; Fake is a scripted stand-in for unit tests.
package ollamatest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/inputs/gobuild"
	"github.com/tdforge/tdforge/internal/ollama/gguf"
	"github.com/tdforge/tdforge/internal/ollama/ollamastore"
	"github.com/tdforge/tdforge/internal/testutil/netutil"
	"github.com/tdforge/tdforge/internal/testutil/syncbuf"
)

// Spec is the pinned Ollama build: the same spec, and so the same cache
// entry, as the image builder's manifests and internal/inputs/gobuild's tests.
var Spec = gobuild.Ollama057

// Model is the tiny model's name in the store.
const Model = "tiny:latest"

// Server is a running Ollama.
type Server struct {
	URL    string // http://127.0.0.1:port
	Binary string
	cmd    *exec.Cmd
	log    *syncbuf.Buffer
}

// Binary builds (or fetches from the cache) Ollama. A first build takes a
// few minutes on 2 cores.
func Binary(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	var log bytes.Buffer
	res, err := gobuild.Build(ctx, Spec, "", &log)
	if err != nil {
		tb.Fatalf("building Ollama v0.5.7: %v\n%s", err, log.String())
	}
	return res.Binary
}

// WriteStore generates the tiny GGUF (seed 1) and materializes
// internal/ollama/ollamastore's layout of it as Model under dir.
func WriteStore(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ggufPath := filepath.Join(dir, "tiny.gguf")
	f, err := os.Create(ggufPath)
	if err != nil {
		return err
	}
	if err := gguf.GenerateTiny(f, 1); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	name, tag, _ := strings.Cut(Model, ":")
	tree, _, err := ollamastore.Layout(ollamastore.Model{
		Name: name, Tag: tag, GGUFPath: ggufPath, Template: "{{ .Prompt }}",
		Params: map[string]any{"num_ctx": 512}, Epoch: 1700000000, ModelType: "124K",
	})
	if err != nil {
		return err
	}
	return tree.WriteDir(dir)
}

// Start runs `ollama serve` on a free loopback port over a fresh store and
// waits until it answers and has the model loaded. It is stopped when the
// test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin := Binary(tb)
	dir := tb.TempDir()
	store := filepath.Join(dir, "models")
	if err := WriteStore(store); err != nil {
		tb.Fatal(err)
	}
	addr := netutil.FreeAddr(tb)
	s := &Server{URL: "http://" + addr, Binary: bin, log: &syncbuf.Buffer{}}
	s.cmd = exec.Command(bin, "serve")
	s.cmd.Env = []string{
		"HOME=" + dir, "PATH=/usr/bin:/bin", "OLLAMA_HOST=" + addr, "OLLAMA_MODELS=" + store,
		"OLLAMA_KEEP_ALIVE=-1", "OLLAMA_NUM_PARALLEL=4", "OLLAMA_MAX_QUEUE=512", "OLLAMA_NOPRUNE=1",
	}
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	// Ollama starts its runner as a child: give the pair its own process
	// group so cleanup stops both.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	s.cmd.WaitDelay = 5 * time.Second
	if err := s.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.stop)
	if err := netutil.WaitOK(http.DefaultClient, s.URL+"/api/version", 60*time.Second, nil); err != nil {
		tb.Fatalf("Ollama did not start: %v\n%s", err, s.log)
	}
	// Load the model once so tests measure generation, not loading.
	body := fmt.Sprintf(`{"model":%q,"prompt":"hi","stream":false,"options":{"num_predict":1,"temperature":0,"num_thread":1}}`, Model)
	resp, err := http.Post(s.URL+"/api/generate", "application/json", strings.NewReader(body))
	if err != nil {
		tb.Fatalf("warm-up: %v\n%s", err, s.log)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		tb.Fatalf("warm-up: %s\n%s", resp.Status, s.log)
	}
	return s
}

// stop kills Ollama's process group (this server's processes only).
func (s *Server) stop() {
	pgid := s.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	_ = s.cmd.Wait()
}

// Output is what Ollama has written to stdout and stderr so far (in the
// guest, initd forwards it to the console).
func (s *Server) Output() string { return s.log.String() }
