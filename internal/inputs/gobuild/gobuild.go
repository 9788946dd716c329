// Package gobuild builds a Go main package at a pinned module version,
// reproducibly: the module is pinned by its go.sum h1 hash, the toolchain
// environment is fixed, and the result (optionally a fully static binary) is
// cached under the tdforge cache dir keyed by everything that can change its
// bytes.
package gobuild

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/inputs/cache"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	"golang.org/x/mod/sumdb/dirhash"
)

// Spec names what to build.
type Spec struct {
	Module  string   // module path, e.g. github.com/ollama/ollama
	Version string   // exact semantic version, e.g. v0.5.7
	Sum     string   // pinned go.sum hash of the module zip, "h1:..."
	Package string   // main package import path; "" means the module root
	CGO     bool     // CGO_ENABLED=1
	Static  bool     // link externally with -static (glibc, libstdc++, libgcc)
	Ldflags []string // extra linker flags, e.g. "-X", "pkg.Version=1.0"
	Tags    []string // build tags
	// Smoke, if set, runs the binary after every Build (cached or not) and
	// requires its combined output to contain Want.
	Smoke *Smoke
}

// Smoke is a post-build run check.
type Smoke struct {
	Args []string // arguments
	Env  []string // whole environment of the run (nothing is inherited)
	Want string   // required substring of stdout+stderr
}

// Result is a built (or cached) binary.
type Result struct {
	Binary    string // path of the binary inside the cache
	SHA256    string // hex digest of the binary
	GoVersion string // e.g. go1.26.8
	CCVersion string // first line of `gcc --version` ("" when CGO is off)
	Static    bool   // no PT_INTERP and no DT_NEEDED (checked with debug/elf)
	Size      int64
	Cached    bool       // served from the cache
	Info      *BuildInfo // full build record (also stored as buildinfo.json)
}

// BuildInfo records how a cached binary was made.
type BuildInfo struct {
	Schema    string   `json:"schema"`
	Key       string   `json:"key"`
	Module    string   `json:"module"`
	Version   string   `json:"version"`
	Sum       string   `json:"sum"`
	Package   string   `json:"package"`
	CGO       bool     `json:"cgo"`
	Static    bool     `json:"static"`
	Tags      []string `json:"tags,omitempty"`
	Ldflags   string   `json:"ldflags"`
	Args      []string `json:"args"` // go command line
	Env       []string `json:"env"`  // the fixed part of the build environment
	GoVersion string   `json:"go_version"`
	CCVersion string   `json:"cc_version,omitempty"`
	LDVersion string   `json:"ld_version,omitempty"`
	// StaticLibs maps the static archives linked into a Static build (as
	// resolved by gcc -print-file-name) to their sha256.
	StaticLibs map[string]string `json:"static_libs,omitempty"`
	Binary     string            `json:"binary"` // file name inside the cache entry
	SHA256     string            `json:"sha256"`
	Size       int64             `json:"size"`
}

const infoSchema = "tdforge.gobuild/v1"

// fixedEnv is the part of the build environment that never comes from the
// host. CC/CXX name the compilers; their versions are part of the cache key.
func fixedEnv(cgo bool) []string {
	c := "0"
	if cgo {
		c = "1"
	}
	return []string{
		"CGO_ENABLED=" + c,
		"CC=gcc",
		"CXX=g++",
		"CGO_CFLAGS=-O2 -g0",
		"CGO_CXXFLAGS=-O2 -g0",
		"CGO_CPPFLAGS=",
		"CGO_LDFLAGS=",
		"CGO_FFLAGS=",
		"GOFLAGS=",
		"GOOS=linux",
		"GOARCH=amd64",
		"GOAMD64=v1",
		"GOEXPERIMENT=",
		"GOTOOLCHAIN=local",
		"GO111MODULE=on",
		"GOWORK=off",
		"LANG=C",
		"LC_ALL=C",
	}
}

// inherited are host variables passed through: where things are (tools,
// caches) and how to fetch modules. None of them changes the output bytes:
// fetched modules are checked against the pinned sum, caches are
// content-addressed.
var inherited = []string{
	"PATH", "HOME", "TMPDIR",
	"GOPROXY", "GOSUMDB", "GONOSUMDB", "GONOPROXY", "GOPRIVATE", "GOINSECURE", "GOAUTH", "GOVCS",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
	"SSL_CERT_FILE", "SSL_CERT_DIR",
}

func (s *Spec) check() error {
	if s.Module == "" {
		return errors.New("gobuild: spec has no module path")
	}
	if err := module.CheckPath(s.Module); err != nil {
		return fmt.Errorf("gobuild: module %q: %v", s.Module, err)
	}
	if !semver.IsValid(s.Version) || semver.Canonical(s.Version) != s.Version {
		return fmt.Errorf("gobuild: %s: version %q must be an exact semantic version such as v1.2.3 (no branches or queries)", s.Module, s.Version)
	}
	if !strings.HasPrefix(s.Sum, "h1:") || len(s.Sum) != 47 {
		return fmt.Errorf("gobuild: %s@%s: sum %q must be the module's go.sum hash \"h1:<base64 sha256>\" (the line without /go.mod)", s.Module, s.Version, s.Sum)
	}
	if s.Package != s.Module && !strings.HasPrefix(s.Package, s.Module+"/") {
		return fmt.Errorf("gobuild: package %q is not inside module %s", s.Package, s.Module)
	}
	if s.Static && !s.CGO {
		// A cgo-free Go binary is static already; -linkmode external needs cgo.
		return fmt.Errorf("gobuild: %s: static linking applies to cgo builds; without cgo the binary is static already (set CGO or drop Static)", s.Package)
	}
	for _, f := range s.Ldflags {
		if strings.ContainsAny(f, "'\"\n") {
			return fmt.Errorf("gobuild: ldflag %q: quotes and newlines are not supported", f)
		}
	}
	for _, t := range s.Tags {
		if t == "" || strings.ContainsAny(t, ", \t\n") {
			return fmt.Errorf("gobuild: build tag %q is invalid", t)
		}
	}
	return nil
}

// ldflags renders the -ldflags value.
func (s *Spec) ldflags() string {
	fl := []string{"-buildid=", "-s", "-w"}
	for _, f := range s.Ldflags {
		if strings.ContainsAny(f, " \t") {
			f = "'" + f + "'"
		}
		fl = append(fl, f)
	}
	if s.Static {
		fl = append(fl, "-linkmode", "external", "-extldflags", "-static")
	}
	return strings.Join(fl, " ")
}

// args is the go command line (without the "go" itself).
func (s *Spec) args() []string {
	a := []string{"install", "-trimpath", "-buildvcs=false", "-ldflags", s.ldflags()}
	if len(s.Tags) > 0 {
		a = append(a, "-tags", strings.Join(s.Tags, ","))
	}
	return append(a, s.Package+"@"+s.Version)
}

// toolchain is the identity of the tools that build.
type toolchain struct {
	goBin, goVersion, ccVersion, ldVersion string
	gocache, gomodcache, gopath            string
	staticLibs                             map[string]string
}

// staticArchives are the C libraries a static cgo build links in.
var staticArchives = []string{"libc.a", "libm.a", "libpthread.a", "libdl.a", "libstdc++.a", "libgcc.a", "libgcc_eh.a"}

// hashStaticLibs resolves and hashes the static archives, so the cache key
// and the build record pin the exact libraries linked in.
func hashStaticLibs(ctx context.Context, env []string) (map[string]string, error) {
	out := map[string]string{}
	for _, lib := range staticArchives {
		c := exec.CommandContext(ctx, "gcc", "-print-file-name="+lib)
		c.Env = env
		o, err := c.Output()
		if err != nil {
			return nil, fmt.Errorf("gobuild: gcc -print-file-name=%s: %v", lib, err)
		}
		p := filepath.Clean(strings.TrimSpace(string(o)))
		if !filepath.IsAbs(p) {
			if lib == "libc.a" || lib == "libstdc++.a" {
				return nil, fmt.Errorf("gobuild: static linking needs %s, which gcc cannot find (install libc6-dev and libstdc++-dev)", lib)
			}
			continue
		}
		sum, _, err := hashFile(p)
		if err != nil {
			return nil, fmt.Errorf("gobuild: hashing %s: %v", p, err)
		}
		out[p] = sum
	}
	return out, nil
}

func firstLine(b []byte) string {
	l, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(l)
}

func probe(ctx context.Context, env []string, cgo, static bool) (*toolchain, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("gobuild: the go command is not on PATH: %v", err)
	}
	tc := &toolchain{goBin: goBin}
	cmd := exec.CommandContext(ctx, goBin, "env", "-json", "GOVERSION", "GOCACHE", "GOMODCACHE", "GOPATH")
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("gobuild: go env: %v%s", err, stderrOf(err))
	}
	var ge map[string]string
	if err := json.Unmarshal(out, &ge); err != nil {
		return nil, fmt.Errorf("gobuild: go env: %v", err)
	}
	tc.goVersion, tc.gocache, tc.gomodcache, tc.gopath = ge["GOVERSION"], ge["GOCACHE"], ge["GOMODCACHE"], ge["GOPATH"]
	if tc.goVersion == "" || tc.gocache == "" || tc.gocache == "off" || tc.gomodcache == "" {
		return nil, fmt.Errorf("gobuild: go env reports no version or cache (GOVERSION=%q GOCACHE=%q GOMODCACHE=%q)", tc.goVersion, tc.gocache, tc.gomodcache)
	}
	if cgo {
		for _, t := range []struct {
			dst  *string
			name string
			args []string
		}{{&tc.ccVersion, "gcc", []string{"--version"}}, {&tc.ldVersion, "ld", []string{"--version"}}} {
			c := exec.CommandContext(ctx, t.name, t.args...)
			c.Env = env
			o, err := c.Output()
			if err != nil {
				return nil, fmt.Errorf("gobuild: cgo needs %s (install gcc/g++ and binutils): %v", t.name, err)
			}
			*t.dst = firstLine(o)
		}
	}
	if static {
		var err error
		if tc.staticLibs, err = hashStaticLibs(ctx, env); err != nil {
			return nil, err
		}
	}
	return tc, nil
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return ": " + strings.TrimSpace(string(ee.Stderr))
	}
	return ""
}

// key derives the cache key from everything that determines the bytes.
func key(s *Spec, tc *toolchain, env []string) string {
	k := struct {
		Schema, Module, Version, Sum, Package string
		CGO, Static                           bool
		Args, Env                             []string
		Go, CC, LD                            string
		Libs                                  map[string]string
	}{infoSchema, s.Module, s.Version, s.Sum, s.Package, s.CGO, s.Static, s.args(), env, tc.goVersion, tc.ccVersion, tc.ldVersion, tc.staticLibs}
	b, _ := json.Marshal(k)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:16])
}

// Build builds s (or returns the cached binary) under cacheDir/gobuild/<key>.
// cacheDir "" means cache.DefaultRoot(). Progress and compiler output go to log.
func Build(ctx context.Context, s Spec, cacheDir string, log io.Writer) (*Result, error) {
	if log == nil {
		log = io.Discard
	}
	if s.Package == "" {
		s.Package = s.Module
	}
	s.Tags = slices.Sorted(slices.Values(s.Tags)) // build tag order does not matter
	if err := s.check(); err != nil {
		return nil, err
	}
	if cacheDir == "" {
		d, err := cache.DefaultRoot()
		if err != nil {
			return nil, err
		}
		cacheDir = d
	}
	fixed := fixedEnv(s.CGO)
	env := append([]string{}, fixed...)
	for _, v := range inherited {
		if val, ok := os.LookupEnv(v); ok {
			env = append(env, v+"="+val)
		}
	}
	// Caches are located with the host's settings, then passed explicitly.
	hostEnv := append(append([]string{}, env...), passthrough("GOCACHE", "GOMODCACHE", "GOPATH", "XDG_CACHE_HOME")...)
	tc, err := probe(ctx, hostEnv, s.CGO, s.Static)
	if err != nil {
		return nil, err
	}
	env = append(env, "GOCACHE="+tc.gocache, "GOMODCACHE="+tc.gomodcache, "GOPATH="+tc.gopath)

	k := key(&s, tc, fixed)
	dir := filepath.Join(cacheDir, "gobuild", k)
	if res, err := loadCached(dir); err == nil {
		fmt.Fprintf(log, "gobuild: %s@%s: cached %s\n", s.Package, s.Version, res.Binary)
		res.Cached = true
		return res, smoke(ctx, &s, res.Binary)
	} else if !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(log, "gobuild: ignoring bad cache entry %s: %v\n", dir, err)
	}

	work, err := os.MkdirTemp("", "tdforge-gobuild-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	if err := verifyPin(ctx, &s, tc, env, work, log); err != nil {
		return nil, err
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("gobuild: cache dir: %v", err)
	}
	gobin, err := os.MkdirTemp(dir, ".gobin-")
	if err != nil {
		return nil, fmt.Errorf("gobuild: cache dir: %v", err)
	}
	defer os.RemoveAll(gobin)
	args := s.args()
	fmt.Fprintf(log, "gobuild: go %s\n", strings.Join(args, " "))
	start := time.Now()
	cmd := exec.CommandContext(ctx, tc.goBin, args...)
	cmd.Dir = work
	cmd.Env = append(append([]string{}, env...), "GOBIN="+gobin)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("gobuild: building %s@%s: %v", s.Package, s.Version, ctx.Err())
		}
		return nil, fmt.Errorf("gobuild: building %s@%s failed: %v; the compiler output was written to the log", s.Package, s.Version, err)
	}
	fmt.Fprintf(log, "gobuild: built %s in %s\n", s.Package, time.Since(start).Round(time.Second))
	ents, err := os.ReadDir(gobin)
	if err != nil || len(ents) != 1 {
		return nil, fmt.Errorf("gobuild: go install of %s produced %d files in GOBIN, want exactly one (is it a main package?)", s.Package, len(ents))
	}
	name := ents[0].Name()
	built := filepath.Join(gobin, name)
	static, err := IsStatic(built)
	if err != nil {
		return nil, err
	}
	if s.Static && !static {
		return nil, fmt.Errorf("gobuild: %s was linked with -static but still has an interpreter or shared library dependencies", s.Package)
	}
	sum, size, err := hashFile(built)
	if err != nil {
		return nil, err
	}
	info := &BuildInfo{
		Schema: infoSchema, Key: k, Module: s.Module, Version: s.Version, Sum: s.Sum, Package: s.Package,
		CGO: s.CGO, Static: static, Tags: s.Tags, Ldflags: s.ldflags(), Args: args, Env: fixed,
		GoVersion: tc.goVersion, CCVersion: tc.ccVersion, LDVersion: tc.ldVersion, StaticLibs: tc.staticLibs,
		Binary: name, SHA256: sum, Size: size,
	}
	// Publish the binary first, then the record that marks the entry complete.
	bin := filepath.Join(dir, name)
	if err := os.Chmod(built, 0o755); err != nil {
		return nil, err
	}
	if err := os.Rename(built, bin); err != nil {
		return nil, fmt.Errorf("gobuild: caching binary: %v", err)
	}
	ib, _ := json.MarshalIndent(info, "", "  ")
	if err := fsutil.WriteFile(filepath.Join(dir, "buildinfo.json"), append(ib, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("gobuild: caching build info: %v", err)
	}
	res := resultOf(dir, info)
	return res, smoke(ctx, &s, res.Binary)
}

func passthrough(names ...string) []string {
	var out []string
	for _, n := range names {
		if v, ok := os.LookupEnv(n); ok {
			out = append(out, n+"="+v)
		}
	}
	return out
}

// verifyPin downloads module@version and checks the zip's hash and the
// extracted tree's hash against the pinned sum.
func verifyPin(ctx context.Context, s *Spec, tc *toolchain, env []string, work string, log io.Writer) error {
	mv := s.Module + "@" + s.Version
	fmt.Fprintf(log, "gobuild: go mod download %s\n", mv)
	cmd := exec.CommandContext(ctx, tc.goBin, "mod", "download", "-json", mv)
	cmd.Dir = work
	cmd.Env = env
	out, err := cmd.Output()
	var dl struct {
		Path, Version, Sum, Dir, Zip, Error string
	}
	if len(out) > 0 {
		if jerr := json.Unmarshal(out, &dl); jerr != nil && err == nil {
			return fmt.Errorf("gobuild: go mod download %s: %v", mv, jerr)
		}
	}
	if err != nil || dl.Error != "" {
		msg := dl.Error
		if msg == "" {
			msg = err.Error() + stderrOf(err)
		}
		return fmt.Errorf("gobuild: cannot download %s (check the module path, the version and the GOPROXY network access): %s", mv, msg)
	}
	if dl.Sum != s.Sum {
		return fmt.Errorf("gobuild: %s: pinned sum mismatch: pinned %s, downloaded %s; if the new version is intended, update the pin from the module's go.sum line", mv, s.Sum, dl.Sum)
	}
	// The build reads the extracted tree, so check that it matches too.
	got, err := dirhash.HashDir(dl.Dir, mv, dirhash.Hash1)
	if err != nil {
		return fmt.Errorf("gobuild: hashing %s: %v", dl.Dir, err)
	}
	if got != s.Sum {
		return fmt.Errorf("gobuild: %s: the extracted module in %s hashes to %s, not the pinned %s; the module cache was modified (run `go clean -modcache` and retry)", mv, dl.Dir, got, s.Sum)
	}
	return nil
}

func resultOf(dir string, info *BuildInfo) *Result {
	return &Result{
		Binary: filepath.Join(dir, info.Binary), SHA256: info.SHA256, GoVersion: info.GoVersion,
		CCVersion: info.CCVersion, Static: info.Static, Size: info.Size, Info: info,
	}
}

// loadCached returns the entry in dir if its record exists and the binary
// still has the recorded digest.
func loadCached(dir string) (*Result, error) {
	b, err := os.ReadFile(filepath.Join(dir, "buildinfo.json"))
	if err != nil {
		return nil, err
	}
	var info BuildInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("buildinfo.json: %v", err)
	}
	if info.Schema != infoSchema || info.Binary == "" || info.Binary != path.Base(info.Binary) {
		return nil, fmt.Errorf("buildinfo.json: unexpected schema or binary name")
	}
	sum, _, err := hashFile(filepath.Join(dir, info.Binary))
	if err != nil {
		return nil, fmt.Errorf("cached binary: %v", err)
	}
	if sum != info.SHA256 {
		return nil, fmt.Errorf("cached binary hashes to %s, recorded %s", sum, info.SHA256)
	}
	return resultOf(dir, &info), nil
}

var hashFile = fsutil.SHA256

// IsStatic reports whether the ELF file at p is self-contained: no program
// interpreter (PT_INTERP) and no DT_NEEDED shared libraries.
func IsStatic(p string) (bool, error) {
	f, err := elf.Open(p)
	if err != nil {
		return false, fmt.Errorf("gobuild: %s is not an ELF binary: %v", p, err)
	}
	defer f.Close()
	for _, ph := range f.Progs {
		if ph.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return false, fmt.Errorf("gobuild: reading dynamic section of %s: %v", p, err)
	}
	return len(libs) == 0, nil
}

func smoke(ctx context.Context, s *Spec, bin string) error {
	if s.Smoke == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, s.Smoke.Args...)
	cmd.Env = s.Smoke.Env
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	cmd.Dir = filepath.Dir(bin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if !strings.Contains(out.String(), s.Smoke.Want) {
		return fmt.Errorf("gobuild: smoke test `%s %s` did not print %q (err %v); output:\n%s",
			filepath.Base(bin), strings.Join(s.Smoke.Args, " "), s.Smoke.Want, err, out.String())
	}
	return nil
}
