// Package bootpolicy loads the boot policy for initd: internal/tdx/policy's
// strict decoding and validation, plus the checks initd needs before it
// turns the policy into users, mounts and processes.
package bootpolicy

import (
	"fmt"
	"os"
	"path"
	"regexp"
	"strings"

	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// Load reads and checks the policy file.
func Load(file string) (*policy.Policy, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("boot policy %s: %w (the builder writes it into the initramfs)", file, err)
	}
	defer f.Close()
	p, err := policy.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if err := Check(p); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return p, nil
}

var (
	ifaceRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)
)

// Reserved are initd's own mounts; payloads may not be mounted on or under them.
var Reserved = []string{"/", "/proc", "/sys", "/dev", "/run", "/tmp", "/etc", "/init"}

// Check adds the checks policy.Validate leaves out: names usable in
// /etc/passwd, one uid/gid per user, clean paths, payload mount points that
// neither collide nor shadow initd's mounts, and well-formed environment.
func Check(p *policy.Policy) error {
	errf := func(format string, a ...any) error { return fmt.Errorf("boot policy: "+format, a...) }
	for _, m := range p.Kernel.Modules {
		if path.Clean(m) != m {
			return errf("kernel module path %q is not clean (write %q)", m, path.Clean(m))
		}
	}
	mounts := map[string]string{}
	for _, pl := range p.Payloads {
		mp := pl.MountPoint
		if path.Clean(mp) != mp {
			return errf("payload %q: mount_point %q is not clean (write %q)", pl.Name, mp, path.Clean(mp))
		}
		for _, r := range Reserved {
			if mp == r || (r != "/" && strings.HasPrefix(mp, r+"/")) {
				return errf("payload %q: mount_point %q would shadow initd's %s; use a directory such as /srv/%s", pl.Name, mp, r, pl.Name)
			}
		}
		for other, name := range mounts {
			if mp == other || strings.HasPrefix(mp, other+"/") || strings.HasPrefix(other, mp+"/") {
				return errf("payload %q: mount_point %q overlaps payload %q at %q", pl.Name, mp, name, other)
			}
		}
		mounts[mp] = pl.Name
	}
	if p.Network.Interface != "" && !ifaceRE.MatchString(p.Network.Interface) {
		return errf("network interface %q is not a valid interface name", p.Network.Interface)
	}
	type ids struct{ uid, gid int }
	users := map[string]ids{}
	uids := map[int]string{}
	for _, s := range p.Services {
		if !policy.ValidUser(s.User) {
			return errf("service %q: user %q must match %s", s.Name, s.User, policy.UserPattern)
		}
		if prev, ok := users[s.User]; ok && prev != (ids{s.UID, s.GID}) {
			return errf("service %q: user %q has uid/gid %d/%d here but %d/%d in another service", s.Name, s.User, s.UID, s.GID, prev.uid, prev.gid)
		}
		if u, ok := uids[s.UID]; ok && u != s.User {
			return errf("service %q: uid %d is already user %q", s.Name, s.UID, u)
		}
		users[s.User], uids[s.UID] = ids{s.UID, s.GID}, s.User
		if s.UID > 65533 || s.GID > 65533 {
			return errf("service %q: uid/gid must be below 65534", s.Name)
		}
		if path.Clean(s.Command) != s.Command {
			return errf("service %q: command %q is not clean (write %q)", s.Name, s.Command, path.Clean(s.Command))
		}
		for k, v := range s.Env {
			if !policy.ValidEnvName(k) {
				return errf("service %q: environment name %q must match %s", s.Name, k, policy.EnvPattern)
			}
			switch k {
			case "HOME", "USER":
				return errf("service %q: environment %s is set by initd; remove it", s.Name, k)
			}
			if strings.ContainsRune(v, 0) {
				return errf("service %q: environment %s contains a NUL byte", s.Name, k)
			}
		}
		for _, a := range s.Args {
			if strings.ContainsRune(a, 0) {
				return errf("service %q: an argument contains a NUL byte", s.Name)
			}
		}
	}
	return nil
}
