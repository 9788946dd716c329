// Package build is the builder's pipeline: it resolves every pinned input of
// an evaluated manifest, builds the payload disk, the boot policy and the
// initramfs, computes the reference values, and publishes the whole output
// directory atomically.
package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"

	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/inputs/cache"
	"github.com/tdforge/tdforge/internal/inputs/lockfile"
	"github.com/tdforge/tdforge/internal/manifest"
	"github.com/tdforge/tdforge/internal/cli/progress"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// Options control a build.
type Options struct {
	OutDir     string
	UpdateLock bool
	Cache      *cache.Cache
	Progress   progress.Reporter
	Log        *slog.Logger
	// RepoRoot is this repository (initd and agent are built from it).
	RepoRoot string
}

// Result summarizes a finished build.
type Result struct {
	OutDir string
	Info   *imagedir.Info
}

// agentUID/GID and the first service UID; deterministic by construction.
const (
	agentUID     = 900
	firstSvcUID  = 1000
	payloadRoot  = "/payload"
	agentCommand = "/usr/bin/agent"
)

// Build runs the whole pipeline for m into opts.OutDir.
func Build(ctx context.Context, m *manifest.Manifest, opts Options) (*Result, error) {
	if opts.OutDir == "" {
		return nil, errors.New("build: no output directory (-o DIR)")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	opts.Progress = progress.OrDiscard(opts.Progress)
	parent := filepath.Dir(filepath.Clean(opts.OutDir))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	stage, err := os.MkdirTemp(parent, "."+filepath.Base(opts.OutDir)+".tmp")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	if err := os.Chmod(stage, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "tdforge-build")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	p := &pipeline{m: m, o: opts, stage: stage, work: work, inputs: map[string]string{}, progressDone: map[string]int64{}}
	lockPath := m.Path + ".lock.hcl"
	lock, err := lockfile.Read(lockPath)
	if err != nil {
		return nil, err
	}
	p.lock = lock
	if err := p.run(ctx); err != nil {
		return nil, err
	}
	if opts.UpdateLock || p.lockDirty {
		if err := lock.WriteFile(lockPath); err != nil {
			return nil, err
		}
	}
	if err := publish(stage, opts.OutDir); err != nil {
		return nil, err
	}
	return &Result{OutDir: opts.OutDir, Info: p.info}, nil
}

// publish atomically replaces dst with the finished stage directory.
func publish(stage, dst string) error {
	old := ""
	if _, err := os.Stat(dst); err == nil {
		old = dst + ".old"
		os.RemoveAll(old)
		if err := os.Rename(dst, old); err != nil {
			return err
		}
	}
	if err := os.Rename(stage, dst); err != nil {
		if old != "" {
			os.Rename(old, dst)
		}
		return err
	}
	if old != "" {
		return os.RemoveAll(old)
	}
	return nil
}

type pipeline struct {
	m         *manifest.Manifest
	o         Options
	stage     string
	work      string
	lock      *lockfile.Lock
	lockDirty bool

	inputs map[string]string // input key -> sha256
	info   *imagedir.Info

	firmware     []byte
	kernel       []byte
	modules      *moduleSet
	payloads     []builtPayload
	layout       *diskLayout
	pol          *policy.Policy
	policyJSON   []byte
	initrd       []byte
	goVersion    string
	progressDone map[string]int64
}

func (p *pipeline) run(ctx context.Context) error {
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"firmware", p.resolveFirmware},
		{"kernel", p.resolveKernel},
		{"payloads", p.resolvePayloads},
		{"disk", p.buildDisk},
		{"policy", p.buildPolicy},
		{"initramfs", p.buildInitramfs},
		{"simulator", p.buildSimulator},
		{"measure", p.measure},
		{"info", p.writeInfo},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		p.o.Log.Info("build step", "step", s.name)
		if err := s.fn(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (p *pipeline) write(name string, data []byte, perm os.FileMode) error {
	path := filepath.Join(p.stage, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, perm)
}

func sha256hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// fileSHA256 hashes a file streaming.
var fileSHA256 = fsutil.SHA256

// serviceUID returns the deterministic uid for a service by index.
func serviceUID(i int) int { return firstSvcUID + i }

func sortedKeys[M ~map[string]V, V any](m M) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

func jsonIndent(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
