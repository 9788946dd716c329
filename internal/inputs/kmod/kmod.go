// Package kmod resolves kernel modules from a Debian linux-image package:
// it finds the kernel release, reads each module's dependencies (modules.dep
// when the package ships one, otherwise the "depends=" field of the module's
// .modinfo ELF section, which is what depmod itself records), expands the
// requested names transitively and orders them dependencies-first.
//
// Module names treat '-' and '_' as equal. Modules built into the kernel
// (modules.builtin) are satisfied without a file. Soft dependencies are not
// followed: they name crypto aliases whose best provider is CPU-specific.
// Compressed modules (.ko.xz, .ko.zst, .ko.gz) are decompressed at build time
// so the guest loads plain .ko files.
package kmod

import (
	"archive/tar"
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/tdforge/tdforge/internal/image/fstree"
	"github.com/tdforge/tdforge/internal/inputs/debpkg"
)

// Module is one module to load.
type Module struct {
	Name    string   // canonical name (underscores), e.g. "dm_verity"
	Path    string   // plain .ko path in the image, e.g. "lib/modules/<rel>/kernel/drivers/md/dm-verity.ko"
	DebPath string   // path inside the .deb (may end in .xz/.zst/.gz)
	Depends []string // direct dependencies (canonical names)
}

// Set is a resolved, dependency-ordered module list.
type Set struct {
	Release string   // kernel release, e.g. "6.1.0-56-cloud-amd64"
	Modules []Module // load order: every module after its dependencies
	Builtin []string // requested or needed names that are built into the kernel
}

// Canonical maps a module name to its canonical form ('-' -> '_').
func Canonical(name string) string { return strings.ReplaceAll(strings.TrimSpace(name), "-", "_") }

type modInfo struct {
	name    string
	debPath string
	depends []string
}

var koExts = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

func koBase(p string) (string, bool) {
	b := path.Base(p)
	for _, e := range koExts {
		if strings.HasSuffix(b, e) {
			return strings.TrimSuffix(b, e), true
		}
	}
	return "", false
}

// Resolve reads the kernel package debPath and resolves names (plus their
// dependencies) to a load-ordered Set. Order is stable: dependencies are
// visited in their recorded order, requested names in the given order.
func Resolve(debPath string, names []string) (*Set, error) {
	ix, err := loadIndex(debPath)
	if err != nil {
		return nil, err
	}
	mods, builtin := ix.mods, ix.builtin
	set := &Set{Release: ix.release}
	modDir := "lib/modules/" + set.Release + "/"
	state := map[string]int{} // 1 visiting, 2 done
	builtinSeen := map[string]bool{}
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle: %s -> %s", strings.Join(chain, " -> "), name)
		case 2:
			return nil
		}
		m, ok := mods[name]
		if !ok {
			if builtin[name] {
				state[name] = 2
				if !builtinSeen[name] {
					builtinSeen[name] = true
					set.Builtin = append(set.Builtin, name)
				}
				return nil
			}
			if len(chain) > 0 {
				return fmt.Errorf("module %s (needed by %s) is not in %s", name, chain[len(chain)-1], debPath)
			}
			return unknownError(name, debPath, set.Release, mods, builtin)
		}
		state[name] = 1
		for _, d := range m.depends {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		set.Modules = append(set.Modules, Module{
			Name:    name,
			Path:    modDir + plainKo(strings.TrimPrefix(strings.TrimPrefix(m.debPath, "usr/"), modDir)),
			DebPath: m.debPath,
			Depends: m.depends,
		})
		return nil
	}
	for _, n := range names {
		c := Canonical(n)
		if c == "" {
			return nil, fmt.Errorf("kernel.modules: empty module name")
		}
		if err := visit(c, nil); err != nil {
			return nil, err
		}
	}
	return set, nil
}

// debIndex is the parsed module metadata of one kernel package.
type debIndex struct {
	release string
	mods    map[string]*modInfo
	builtin map[string]bool
}

type indexKey struct {
	path  string
	size  int64
	mtime int64
}

var (
	indexMu    sync.Mutex
	indexCache = map[indexKey]*debIndex{}
)

// loadIndex reads every module's metadata from the package in one pass,
// memoized per (path, size, mtime) since decompression dominates.
func loadIndex(debPath string) (*debIndex, error) {
	fi, err := os.Stat(debPath)
	if err != nil {
		return nil, fmt.Errorf("kernel package: %w", err)
	}
	key := indexKey{debPath, fi.Size(), fi.ModTime().UnixNano()}
	indexMu.Lock()
	defer indexMu.Unlock()
	if ix, ok := indexCache[key]; ok {
		return ix, nil
	}
	releases := map[string]bool{}
	mods := map[string]*modInfo{}
	var depFile, builtinFile []byte
	err = debpkg.Walk(debPath, func(e debpkg.Entry, r io.Reader) error {
		p := e.Path
		if strings.HasPrefix(p, "usr/lib/modules/") { // merged-/usr packages
			p = strings.TrimPrefix(p, "usr/")
		}
		rest, ok := strings.CutPrefix(p, "lib/modules/")
		if !ok {
			return nil
		}
		rel, inRel, _ := strings.Cut(rest, "/")
		if rel == "" {
			return nil
		}
		releases[rel] = true
		if e.Type != tar.TypeReg {
			return nil
		}
		switch {
		case inRel == "modules.dep":
			b, err := io.ReadAll(r)
			depFile = b
			return err
		case inRel == "modules.builtin":
			b, err := io.ReadAll(r)
			builtinFile = b
			return err
		}
		base, ok := koBase(p)
		if !ok {
			return nil
		}
		raw, err := readModule(p, r)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", debPath, e.Path, err)
		}
		info, err := parseModinfo(raw)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", debPath, e.Path, err)
		}
		name := Canonical(info["name"])
		if name == "" {
			name = Canonical(base)
		}
		var deps []string
		for _, d := range strings.Split(info["depends"], ",") {
			if d = Canonical(d); d != "" {
				deps = append(deps, d)
			}
		}
		mods[name] = &modInfo{name: name, debPath: e.Path, depends: deps}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(releases) != 1 {
		rs := slices.Sorted(maps.Keys(releases))
		return nil, fmt.Errorf("%s: want exactly one kernel release under lib/modules/, found %d %v: use a linux-image package", debPath, len(rs), rs)
	}
	ix := &debIndex{mods: mods, builtin: map[string]bool{}}
	for r := range releases {
		ix.release = r
	}
	if depFile != nil {
		if err := applyModulesDep(depFile, mods); err != nil {
			return nil, fmt.Errorf("%s: modules.dep: %w", debPath, err)
		}
	}
	for _, l := range strings.Split(string(builtinFile), "\n") {
		if b, ok := koBase(strings.TrimSpace(l)); ok {
			ix.builtin[Canonical(b)] = true
		}
	}
	indexCache[key] = ix
	return ix, nil
}

func plainKo(p string) string {
	for _, e := range koExts[1:] {
		if strings.HasSuffix(p, e) {
			return strings.TrimSuffix(p, e) + ".ko"
		}
	}
	return p
}

// applyModulesDep replaces modinfo dependencies with modules.dep's lists.
// modules.dep lists the full closure; visiting it depth-first still yields a
// valid order because each dependency's own list is visited first.
func applyModulesDep(b []byte, mods map[string]*modInfo) error {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mod, deps, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("malformed line %q", line)
		}
		base, ok := koBase(mod)
		if !ok {
			return fmt.Errorf("malformed module path %q", mod)
		}
		m, ok := mods[Canonical(base)]
		if !ok {
			continue
		}
		m.depends = nil
		// modules.dep lists dependencies deepest-last; load order is the
		// reverse, so visit them reversed.
		fs := strings.Fields(deps)
		for i := len(fs) - 1; i >= 0; i-- {
			if b, ok := koBase(fs[i]); ok {
				m.depends = append(m.depends, Canonical(b))
			}
		}
	}
	return sc.Err()
}

func unknownError(name, deb, rel string, mods map[string]*modInfo, builtin map[string]bool) error {
	type cand struct {
		n string
		d int
	}
	var cs []cand
	for n := range mods {
		d := distance(name, n)
		if strings.Contains(n, name) || strings.Contains(name, n) && len(n) > 2 {
			d = min(d, 2)
		}
		if d <= max(2, len(name)/3) {
			cs = append(cs, cand{n, d})
		}
	}
	slices.SortFunc(cs, func(a, b cand) int { return cmp.Or(cmp.Compare(a.d, b.d), strings.Compare(a.n, b.n)) })
	var sugg []string
	for i := 0; i < len(cs) && i < 5; i++ {
		sugg = append(sugg, cs[i].n)
	}
	msg := fmt.Sprintf("kernel.modules: unknown module %q: not a module or built-in of kernel %s in %s", name, rel, deb)
	if len(sugg) > 0 {
		msg += "; did you mean " + strings.Join(sugg, ", ") + "?"
	}
	return fmt.Errorf("%s", msg)
}

// distance is the Levenshtein edit distance.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// readModule reads a module file, decompressing by extension.
func readModule(p string, r io.Reader) ([]byte, error) {
	switch {
	case strings.HasSuffix(p, ".xz"):
		z, err := xz.NewReader(r)
		if err != nil {
			return nil, err
		}
		return io.ReadAll(z)
	case strings.HasSuffix(p, ".zst"):
		z, err := zstd.NewReader(r)
		if err != nil {
			return nil, err
		}
		defer z.Close()
		return io.ReadAll(z)
	case strings.HasSuffix(p, ".gz"):
		z, err := gzip.NewReader(r)
		if err != nil {
			return nil, err
		}
		return io.ReadAll(z)
	}
	return io.ReadAll(r)
}

// parseModinfo returns the key=value pairs of the .modinfo section (the
// first value of each key).
func parseModinfo(ko []byte) (map[string]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, fmt.Errorf("not an ELF module: %w", err)
	}
	s := f.Section(".modinfo")
	if s == nil {
		return nil, fmt.Errorf("no .modinfo section")
	}
	b, err := s.Data()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, kv := range bytes.Split(b, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		if _, dup := out[k]; !dup {
			out[k] = v
		}
	}
	return out, nil
}

// Names returns the module names in load order.
func (s *Set) Names() []string {
	out := make([]string, len(s.Modules))
	for i, m := range s.Modules {
		out[i] = m.Name
	}
	return out
}

// ModulesDep renders a modules.dep for the set (paths relative to
// lib/modules/<release>/, each module's full closure, deepest last) so that
// standard module loaders work in the guest.
func (s *Set) ModulesDep() []byte {
	idx := map[string]int{}
	for i, m := range s.Modules {
		idx[m.Name] = i
	}
	prefix := "lib/modules/" + s.Release + "/"
	var b bytes.Buffer
	for _, m := range s.Modules {
		// Closure in reverse load order (deepest last).
		seen := map[string]bool{}
		var order []int
		var walk func(n string)
		walk = func(n string) {
			i, ok := idx[n]
			if !ok || seen[n] {
				return
			}
			seen[n] = true
			for _, d := range s.Modules[i].Depends {
				walk(d)
			}
			order = append(order, i)
		}
		for _, d := range m.Depends {
			walk(d)
		}
		fmt.Fprintf(&b, "%s:", strings.TrimPrefix(m.Path, prefix))
		for k := len(order) - 1; k >= 0; k-- {
			fmt.Fprintf(&b, " %s", strings.TrimPrefix(s.Modules[order[k]].Path, prefix))
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// Extract writes the set's modules as plain .ko files under destDir (at
// their Path) plus lib/modules/<release>/modules.dep.
func (s *Set) Extract(debPath, destDir string) error {
	_, err := s.extract(debPath, destDir)
	return err
}

// Entries is Extract that also returns fstree entries (0644, sorted)
// referencing the written files, ready to merge into an initramfs tree.
func (s *Set) Entries(debPath, destDir string) ([]fstree.Entry, error) {
	return s.extract(debPath, destDir)
}

func (s *Set) extract(debPath, destDir string) ([]fstree.Entry, error) {
	want := map[string]Module{}
	for _, m := range s.Modules {
		want[m.DebPath] = m
	}
	done := map[string]bool{}
	var entries []fstree.Entry
	err := debpkg.Walk(debPath, func(e debpkg.Entry, r io.Reader) error {
		m, ok := want[e.Path]
		if !ok || e.Type != tar.TypeReg {
			return nil
		}
		raw, err := readModule(e.Path, r)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", debPath, e.Path, err)
		}
		dst := filepath.Join(destDir, filepath.FromSlash(m.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, raw, 0o644); err != nil {
			return err
		}
		done[m.DebPath] = true
		entries = append(entries, fstree.Entry{Path: m.Path, Type: fstree.File, Mode: 0o644, Source: dst, Size: int64(len(raw))})
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, m := range s.Modules {
		if !done[m.DebPath] {
			return nil, fmt.Errorf("%s: module file %s missing (package changed since Resolve?)", debPath, m.DebPath)
		}
	}
	depPath := "lib/modules/" + s.Release + "/modules.dep"
	dep := s.ModulesDep()
	dst := filepath.Join(destDir, filepath.FromSlash(depPath))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(dst, dep, 0o644); err != nil {
		return nil, err
	}
	entries = append(entries, fstree.Entry{Path: depPath, Type: fstree.File, Mode: 0o644, Source: dst, Size: int64(len(dep))})
	slices.SortFunc(entries, func(a, b fstree.Entry) int { return strings.Compare(a.Path, b.Path) })
	return entries, nil
}
