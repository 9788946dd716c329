// Package build is the builder's pipeline. NewPlan turns an evaluated
// manifest into a Plan (the platform profile and the inputs missing here);
// Build and Measure run the same steps over it: resolve every pinned input,
// build the payload disk, the boot policy and the initramfs, and compute the
// registers. Build then writes the reference values and publishes the
// output directory atomically; Measure stops where a missing input is
// needed and says which registers that leaves unknown.
package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tdforge/tdforge/internal/cli/progress"
	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/inputs/cache"
	"github.com/tdforge/tdforge/internal/inputs/lockfile"
	"github.com/tdforge/tdforge/internal/manifest"
	"github.com/tdforge/tdforge/internal/tdx/measure"
	"github.com/tdforge/tdforge/internal/tdx/platform"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
)

// Options control a run of the pipeline.
type Options struct {
	OutDir     string // Build only: replaced atomically
	UpdateLock bool
	Cache      *cache.Cache
	Progress   progress.Reporter // downloads, hashing, disk writes; nil: none
	// Log receives the tools' own output (compilers, go's download lines);
	// nil discards it.
	Log io.Writer
	// OnStep, if set, is called as each step starts or is skipped.
	OnStep func(Step)
	// RepoRoot is this repository (initd and agent are built from it).
	RepoRoot string
	// Secrets is the directory of key-broker resource files holding the
	// keys of encrypted payloads (builder build --secrets); Build creates
	// missing ones. Empty: a manifest with an encrypted payload is refused
	// (Build) or that payload is missing (Measure).
	Secrets string
}

// Step is one step of the pipeline, as reported to Options.OnStep.
type Step struct {
	Index, Total int    // 1-based position among the run's steps
	Name         string // e.g. "payloads"
	Summary      string // what it does, for people
	Skipped      string // why the step does not run ("" when it runs)
}

// Result summarizes a finished build.
type Result struct {
	OutDir    string
	Info      *imagedir.Info
	Reference *refvalues.Document // what reference-values.json holds
}

// Measurement is the registers of the image a plan describes, computed
// without publishing an image.
type Measurement struct {
	Result  *measure.Result
	Profile *platform.Profile
	// Missing is the plan's missing inputs plus the payloads whose
	// download failed; Result.Reasons says which registers they leave
	// unknown.
	Missing []Missing
	// Unset is the plan's attributes that depend on variables without a
	// value (see Plan.Unset).
	Unset []string
}

// ErrNoRepoRoot is returned when the tdforge source tree (initd and agent
// are built from it) is not known.
var ErrNoRepoRoot = errors.New("cannot find the tdforge source tree to build initd and agent from")

// agentUID/GID and the first service UID; deterministic by construction.
const (
	agentUID     = 900
	firstSvcUID  = 1000
	payloadRoot  = "/payload"
	agentCommand = "/usr/bin/agent"
)

// Build runs every step of plan and publishes the image into opts.OutDir.
// A plan with missing inputs is refused.
func Build(ctx context.Context, plan *Plan, opts Options) (*Result, error) {
	if opts.OutDir == "" {
		return nil, errors.New("build: no output directory")
	}
	if len(plan.Missing) > 0 || len(plan.Unset) > 0 {
		return nil, &missingError{plan.Missing, plan.Unset}
	}
	if opts.Secrets == "" {
		for _, pl := range plan.Manifest.Payloads {
			if pl.Encryption != nil {
				return nil, noSecrets(pl)
			}
		}
	}
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
	p, cleanup, err := newPipeline(plan, opts, stage, true)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	if err := p.run(ctx); err != nil {
		return nil, err
	}
	if opts.UpdateLock || p.lockDirty {
		if err := p.lock.WriteFile(lockPath(plan.Manifest)); err != nil {
			return nil, err
		}
	}
	if err := publish(stage, opts.OutDir); err != nil {
		return nil, err
	}
	return &Result{OutDir: opts.OutDir, Info: p.info, Reference: p.ref}, nil
}

// Measure runs plan's steps without publishing: it stops where a missing
// input is needed and reports which registers that leaves unknown, and why.
// A payload whose download fails is missing too. Payloads that are missing
// but pin their verity_root_hash need no bytes: RTMR3 is then still
// computed. RTMR2 (and RTMR1 on platforms that patch the kernel with the
// initrd size) embed the boot policy, which records every payload's layout,
// so they are reported unknown with the reason, never guessed.
func Measure(ctx context.Context, plan *Plan, opts Options) (*Measurement, error) {
	stage, err := os.MkdirTemp("", "tdforge-measure")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	p, cleanup, err := newPipeline(plan, opts, stage, false)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	if err := p.run(ctx); err != nil {
		return nil, err
	}
	return &Measurement{Result: p.result, Profile: plan.Profile, Missing: p.missing, Unset: plan.Unset}, nil
}

func lockPath(m *manifest.Manifest) string { return m.Path + ".lock.hcl" }

func newPipeline(plan *Plan, opts Options, stage string, publishing bool) (*pipeline, func(), error) {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	opts.Progress = progress.OrDiscard(opts.Progress)
	lock, err := lockfile.Read(lockPath(plan.Manifest))
	if err != nil {
		return nil, nil, err
	}
	work, err := os.MkdirTemp("", "tdforge-build")
	if err != nil {
		return nil, nil, err
	}
	p := &pipeline{m: plan.Manifest, prof: plan.Profile, o: opts, stage: stage, work: work, lock: lock, publishing: publishing,
		missing: slices.Clone(plan.Missing), unset: plan.Unset, inputs: map[string]string{}, progressDone: map[string]int64{}, keys: map[string][]byte{}}
	return p, func() { os.RemoveAll(work) }, nil
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
	m          *manifest.Manifest
	prof       *platform.Profile
	o          Options
	stage      string
	work       string
	lock       *lockfile.Lock
	lockDirty  bool
	publishing bool      // Build (write the image) rather than Measure
	missing    []Missing // payloads whose bytes are not here
	unset      []string  // attributes outside payloads without a value (Plan.Unset)

	inputs map[string]string // input key -> sha256
	info   *imagedir.Info
	result *measure.Result
	ref    *refvalues.Document

	firmware     []byte
	kernel       []byte
	modules      *moduleSet
	payloads     []builtPayload
	keys         map[string][]byte // payload -> dm-crypt key (never written)
	layout       *diskLayout
	pol          *policy.Policy
	policyJSON   []byte
	initrd       []byte
	goVersion    string
	progressDone map[string]int64
}

type stepFunc struct {
	name, summary string
	fn            func(context.Context) error
	publish       bool                   // only when building an image
	skip          func(*pipeline) string // why it cannot run here, or ""
}

// steps is the pipeline, in order; Build and Measure run the same list.
func (p *pipeline) steps() []stepFunc {
	return []stepFunc{
		{name: "firmware", summary: "fetch and check the firmware", fn: p.resolveFirmware},
		{name: "kernel", summary: "fetch the kernel and its modules", fn: p.resolveKernel},
		{name: "payloads", summary: "fetch and build the payloads", fn: p.resolvePayloads, skip: (*pipeline).rtmr3Unknowable},
		{name: "disk", summary: "write the payload disk (EROFS, dm-crypt where encrypted, dm-verity)", fn: p.buildDisk, skip: (*pipeline).rtmr3Unknowable},
		{name: "policy", summary: "derive the boot policy", fn: p.buildPolicy, skip: (*pipeline).inputsMissing},
		{name: "initramfs", summary: "build initd and agent, write the initramfs", fn: p.buildInitramfs, skip: (*pipeline).inputsMissing},
		{name: "measure", summary: "compute MRTD and RTMR0..3", fn: p.measure},
		{name: "reference", summary: "write the reference values", fn: p.writeReference, publish: true},
		{name: "info", summary: "write build.json", fn: p.writeInfo, publish: true},
	}
}

func (p *pipeline) run(ctx context.Context) error {
	var steps []stepFunc
	for _, s := range p.steps() {
		if p.publishing || !s.publish {
			steps = append(steps, s)
		}
	}
	for i, s := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		st := Step{Index: i + 1, Total: len(steps), Name: s.name, Summary: s.summary}
		if s.skip != nil {
			st.Skipped = s.skip(p)
		}
		if p.o.OnStep != nil {
			p.o.OnStep(st)
		}
		if st.Skipped != "" {
			continue
		}
		if err := s.fn(ctx); err != nil {
			return err
		}
	}
	return nil
}

// inputsMissing says why the steps that need every payload cannot run.
func (p *pipeline) inputsMissing() string {
	if len(p.unset) > 0 {
		return "needs every setting; without a value: " + strings.Join(p.unset, ", ")
	}
	if len(p.missing) == 0 {
		return ""
	}
	return "needs every payload; missing: " + missingNames(p.missing, false)
}

// rtmr3Unknowable says why building the payloads is pointless: a setting
// without a value leaves RTMR2 and RTMR3 unknown whatever the payloads
// hold, or a missing payload pins no verity root hash, so RTMR3 cannot be
// computed and RTMR2 needs every payload anyway.
func (p *pipeline) rtmr3Unknowable() string {
	if len(p.unset) > 0 {
		return "RTMR3 cannot be computed: its configuration event covers " + strings.Join(p.unset, ", ") + ", which have no value"
	}
	if names := missingNames(p.missing, true); names != "" {
		return "RTMR3 cannot be computed without the bytes or the verity_root_hash pin of " + names
	}
	return ""
}

// missingNames lists the missing payloads (only the unpinned ones with
// unpinnedOnly), comma-separated.
func missingNames(ms []Missing, unpinnedOnly bool) string {
	var names []string
	for _, m := range ms {
		if !unpinnedOnly || !m.Pinned {
			names = append(names, m.Payload)
		}
	}
	return strings.Join(names, ", ")
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
