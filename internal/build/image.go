package build

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/tdforge/tdforge/internal/image/fstree"
	"github.com/tdforge/tdforge/internal/image/gptdisk"
	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/image/initramfs"
	"github.com/tdforge/tdforge/internal/inputs/selfbuild"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// diskLayout aliases the payload disk layout.
type diskLayout = gptdisk.Layout

func (p *pipeline) buildDisk(ctx context.Context) error {
	if len(p.payloads) == 0 {
		return nil
	}
	pc, err := p.o.Cache.Dir("partitions")
	if err != nil {
		return err
	}
	var in []gptdisk.Payload
	for _, b := range p.payloads {
		gp := gptdisk.Payload{Name: b.name, Tree: b.tree}
		if mp := p.m.Payload(b.name); mp != nil && mp.Encryption != nil {
			if gp.Key = p.keys[b.name]; gp.Key == nil {
				return fmt.Errorf("payload %q: internal error: encrypted without a key", b.name)
			}
		}
		in = append(in, gp)
	}
	tasks := map[string]interface {
		Add(int64)
		Done()
	}{}
	var vols []gptdisk.Volume
	for _, v := range p.m.Volumes {
		vols = append(vols, gptdisk.Volume{Name: v.Name, UUID: policy.VolumeUUID(p.m.Image.Name, v.Name), SizeBytes: v.SizeBytes})
	}
	layout, err := gptdisk.Build(ctx, filepath.Join(p.stage, imagedir.Disk), in, gptdisk.Options{
		CacheDir: pc,
		Volumes:  vols,
		Progress: func(name string, done, total int64) {
			t, ok := tasks[name]
			if !ok {
				t = p.o.Progress.Start("payload "+name, total)
				tasks[name] = t
			}
			t.Add(done - p.progressDone[name])
			p.progressDone[name] = done
			if done >= total {
				t.Done()
			}
		},
	})
	if err != nil {
		return fmt.Errorf("payload disk: %w", err)
	}
	for _, m := range p.m.Payloads {
		if part, ok := layout.Partition(m.Name); ok && m.VerityRootHash != "" && part.RootHash != m.VerityRootHash {
			return fmt.Errorf("payload %q: built verity root hash %s differs from the manifest's pin verity_root_hash = %s", m.Name, part.RootHash, m.VerityRootHash)
		}
	}
	p.layout = layout
	b, err := layout.Marshal()
	if err != nil {
		return err
	}
	return p.write(imagedir.Payloads, b, 0o644)
}

// buildInitramfs builds initd and agent from this repository and writes the
// initramfs: /init (initd), /usr/bin/agent, the boot policy and the kernel
// modules.
func (p *pipeline) buildInitramfs(ctx context.Context) error {
	if p.o.RepoRoot == "" {
		return ErrNoRepoRoot
	}
	bin := filepath.Join(p.work, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	var goVersion string
	for _, prog := range []string{"initd", "agent"} {
		v, err := selfbuild.Build(ctx, p.o.RepoRoot, "./"+prog, filepath.Join(bin, prog), p.o.Log)
		if err != nil {
			return fmt.Errorf("building %s: %w", prog, err)
		}
		goVersion = v
	}
	p.goVersion = goVersion
	t := &fstree.Tree{Epoch: p.m.Image.SourceDateEpoch}
	add := func(path string, typ fstree.Type, mode fs.FileMode, src string, data []byte) error {
		e := fstree.Entry{Path: path, Type: typ, Mode: mode, Source: src, Data: data}
		if typ == fstree.File {
			if src != "" {
				st, err := os.Stat(src)
				if err != nil {
					return err
				}
				e.Size = st.Size()
			} else {
				e.Size = int64(len(data))
			}
		}
		t.Entries = append(t.Entries, e)
		return nil
	}
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", "payload", "etc/tdforge", "usr/bin"} {
		add(d, fstree.Dir, 0o755, "", nil)
	}
	if err := add("init", fstree.File, 0o755, filepath.Join(bin, "initd"), nil); err != nil {
		return err
	}
	if err := add(strings.TrimPrefix(agentCommand, "/"), fstree.File, 0o755, filepath.Join(bin, "agent"), nil); err != nil {
		return err
	}
	add(strings.TrimPrefix(policy.Path, "/"), fstree.File, 0o644, "", p.policyJSON)
	for _, mp := range p.modules.paths {
		rel := strings.TrimPrefix(mp, "/")
		if err := add(rel, fstree.File, 0o644, filepath.Join(p.modules.dir, rel), nil); err != nil {
			return fmt.Errorf("kernel module %s: %w", mp, err)
		}
	}
	if err := t.Normalize(); err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := initramfs.Write(&buf, t); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	p.initrd = buf.Bytes()
	return p.write(imagedir.Initrd, p.initrd, 0o644)
}
