// Package rootfs prepares initd's runtime root filesystem: pseudo
// filesystems, /etc/passwd and /etc/group for the policy's service users,
// their tmpfs homes, and each service's clean environment.
package rootfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/mount"
	"golang.org/x/sys/unix"

	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// HomeRoot holds the services' writable home directories (on the /run tmpfs).
const HomeRoot = "/run/home"

// Path is the PATH every service gets.
const Path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// MountPseudo mounts /proc, /sys, /dev (devtmpfs), /run and /tmp (tmpfs),
// and configfs when the kernel has it. Already-mounted targets are kept.
func MountPseudo() error {
	type m struct {
		src, dst, fs, data string
		flags              uintptr
		optional           bool
	}
	const nodevsuid = unix.MS_NOSUID | unix.MS_NODEV
	for _, x := range []m{
		{"proc", "/proc", "proc", "", nodevsuid | unix.MS_NOEXEC, false},
		{"sysfs", "/sys", "sysfs", "", nodevsuid | unix.MS_NOEXEC, false},
		{"devtmpfs", "/dev", "devtmpfs", "mode=0755", unix.MS_NOSUID, false},
		{"tmpfs", "/run", "tmpfs", "mode=0755", nodevsuid, false},
		{"tmpfs", "/tmp", "tmpfs", "mode=1777", nodevsuid, false},
		{"configfs", "/sys/kernel/config", "configfs", "", nodevsuid | unix.MS_NOEXEC, true},
	} {
		if err := os.MkdirAll(x.dst, 0o755); err != nil && !x.optional {
			return fmt.Errorf("mkdir %s: %w", x.dst, err)
		}
		if _, err := mount.Mount(x.src, x.dst, x.fs, x.data, x.flags); err != nil {
			if errors.Is(err, unix.EBUSY) || x.optional {
				continue
			}
			return fmt.Errorf("mount %s on %s: %w", x.fs, x.dst, err)
		}
	}
	return nil
}

// User is one account derived from the policy's services.
type User struct {
	Name     string
	UID, GID int
	Home     string
}

// Users returns the distinct service users in policy order.
func Users(p *policy.Policy) []User {
	seen := map[string]bool{}
	var out []User
	for _, s := range p.Services {
		if seen[s.User] {
			continue
		}
		seen[s.User] = true
		out = append(out, User{Name: s.User, UID: s.UID, GID: s.GID, Home: filepath.Join(HomeRoot, s.User)})
	}
	return out
}

// WriteAccounts atomically writes etcDir/passwd and etcDir/group: root, the
// service users (no login shell, no password) and one group per gid. A
// group named in extraMembers lists those users as supplementary members.
func WriteAccounts(etcDir string, users []User, extraMembers map[int][]string) error {
	var pw, gr strings.Builder
	pw.WriteString("root:x:0:0:root:/root:/sbin/nologin\n")
	gr.WriteString("root:x:0:\n")
	groups := map[int]string{}
	var gids []int
	for _, u := range users {
		fmt.Fprintf(&pw, "%s:x:%d:%d:tdforge service:%s:/sbin/nologin\n", u.Name, u.UID, u.GID, u.Home)
		if _, ok := groups[u.GID]; !ok {
			groups[u.GID] = u.Name
			gids = append(gids, u.GID)
		}
	}
	sort.Ints(gids)
	for _, g := range gids {
		fmt.Fprintf(&gr, "%s:x:%d:%s\n", groups[g], g, strings.Join(extraMembers[g], ","))
	}
	if err := os.MkdirAll(etcDir, 0o755); err != nil {
		return err
	}
	if err := fsutil.WriteFile(filepath.Join(etcDir, "passwd"), []byte(pw.String()), 0o644); err != nil {
		return err
	}
	return fsutil.WriteFile(filepath.Join(etcDir, "group"), []byte(gr.String()), 0o644)
}

// MakeHomes creates each user's home (0700, owned by the user).
func MakeHomes(users []User) error {
	for _, u := range users {
		// The parent must be traversable by every service user.
		if err := os.MkdirAll(filepath.Dir(u.Home), 0o755); err != nil {
			return fmt.Errorf("home of %s: %w", u.Name, err)
		}
		if err := os.MkdirAll(u.Home, 0o700); err != nil {
			return fmt.Errorf("home of %s: %w", u.Name, err)
		}
		if err := os.Chown(u.Home, u.UID, u.GID); err != nil {
			return fmt.Errorf("home of %s: %w", u.Name, err)
		}
		if err := os.Chmod(u.Home, 0o700); err != nil {
			return fmt.Errorf("home of %s: %w", u.Name, err)
		}
	}
	return nil
}

// Env is a service's complete environment: PATH, HOME, USER, LANG=C.UTF-8
// and the policy's variables (sorted), nothing inherited.
func Env(s policy.Service) []string {
	env := map[string]string{"PATH": Path, "LANG": "C.UTF-8"}
	for k, v := range s.Env {
		env[k] = v
	}
	env["HOME"] = filepath.Join(HomeRoot, s.User)
	env["USER"] = s.User
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
