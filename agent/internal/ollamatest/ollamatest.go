// Package ollamatest runs a real Ollama v0.5.7 (built reproducibly with
// internal/gobuild into the tdforge cache) serving the deterministic tiny
// GGUF model from internal/gguf, for the agent's integration tests and
// benchmarks.
package ollamatest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/gguf"
	"github.com/tdforge/tdforge/internal/gobuild"
)

// Spec is the pinned Ollama build (the same spec, and so the same cache
// entry, as internal/gobuild's tests and the image builder use).
var Spec = gobuild.Spec{
	Module:  "github.com/ollama/ollama",
	Version: "v0.5.7",
	Sum:     "h1:YFxF3UYc3TbOH/j/OhJoxl4LOvPQRcuKUdI5txs/pkc=",
	CGO:     true,
	Static:  true,
	Tags:    []string{"netgo", "osusergo"},
	Ldflags: []string{"-X", "github.com/ollama/ollama/version.Version=0.5.7"},
	Smoke: &gobuild.Smoke{
		Args: []string{"--version"},
		Env:  []string{"OLLAMA_HOST=127.0.0.1:9", "HOME=/nonexistent"},
		Want: "0.5.7",
	},
}

// Model is the tiny model's name in the store.
const Model = "tiny:latest"

// Server is a running Ollama.
type Server struct {
	URL    string // http://127.0.0.1:port
	Binary string
	cmd    *exec.Cmd
	log    *lockedBuffer
}

// lockedBuffer collects the process output; Log may read it while the
// process writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
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

// WriteStore writes an Ollama model store holding Model.
func WriteStore(dir string) error {
	var model bytes.Buffer
	if err := gguf.GenerateTiny(&model, 1); err != nil {
		return err
	}
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int    `json:"size"`
	}
	blobs := filepath.Join(dir, "blobs")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return err
	}
	put := func(mt string, b []byte) (desc, error) {
		h := sha256.Sum256(b)
		d := desc{MediaType: mt, Digest: "sha256:" + hex.EncodeToString(h[:]), Size: len(b)}
		return d, os.WriteFile(filepath.Join(blobs, "sha256-"+hex.EncodeToString(h[:])), b, 0o644)
	}
	var layers []desc
	for _, l := range []struct {
		mt string
		b  []byte
	}{
		{"application/vnd.ollama.image.model", model.Bytes()},
		{"application/vnd.ollama.image.template", []byte("{{ .Prompt }}")},
		{"application/vnd.ollama.image.params", []byte(`{"num_thread":1,"temperature":0}` + "\n")},
	} {
		d, err := put(l.mt, l.b)
		if err != nil {
			return err
		}
		layers = append(layers, d)
	}
	var diffIDs []string
	for _, l := range layers {
		diffIDs = append(diffIDs, l.Digest)
	}
	cfg, _ := json.Marshal(map[string]any{
		"model_format": "gguf", "model_family": "llama", "model_families": []string{"llama"}, "model_type": "124K",
		"file_type": "unknown", "architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	cd, err := put("application/vnd.docker.container.image.v1+json", append(cfg, '\n'))
	if err != nil {
		return err
	}
	man, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
		"config": cd, "layers": layers,
	})
	name, tag, _ := strings.Cut(Model, ":")
	mdir := filepath.Join(dir, "manifests", "registry.ollama.ai", "library", name)
	if err := os.MkdirAll(mdir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(mdir, tag), append(man, '\n'), 0o644)
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &Server{URL: "http://" + addr, Binary: bin, log: &lockedBuffer{}}
	s.cmd = exec.Command(bin, "serve")
	s.cmd.Env = []string{
		"HOME=" + dir, "PATH=/usr/bin:/bin", "OLLAMA_HOST=" + addr, "OLLAMA_MODELS=" + store,
		"OLLAMA_KEEP_ALIVE=-1", "OLLAMA_NUM_PARALLEL=4", "OLLAMA_MAX_QUEUE=512", "OLLAMA_NOPRUNE=1",
	}
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.cmd.Process.Kill(); s.cmd.Wait() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/api/version")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("Ollama did not start: %v\n%s", err, s.log)
		}
		time.Sleep(100 * time.Millisecond)
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

// Log returns Ollama's output so far.
func (s *Server) Log() string { return s.log.String() }
