package rtmr

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	tsmrtmr "github.com/google/go-configfs-tsm/rtmr"

	"github.com/tdforge/tdforge/internal/tdx/register"
)

// Configfs uses configfs-tsm RTMR entries (a patch series carried by some
// vendor kernels) through go-configfs-tsm.
type Configfs struct{ client configfsi.Client }

// NewConfigfs returns a backend over a configfs-tsm client (use RootedClient
// for a real or temp-dir configfs, or go-configfs-tsm's fakertmr in tests).
func NewConfigfs(c configfsi.Client) *Configfs { return &Configfs{client: c} }

// Name implements Backend.
func (*Configfs) Name() string { return "configfs-tsm" }

// Extend implements Backend.
func (c *Configfs) Extend(reg register.Register, digest [48]byte) error {
	if err := checkRTMR(reg); err != nil {
		return err
	}
	if err := tsmrtmr.ExtendDigest(c.client, reg.RTMRIndex(), digest[:]); err != nil {
		return fmt.Errorf("rtmr configfs-tsm: extend %s: %w", reg, err)
	}
	return nil
}

// Read implements Backend.
func (c *Configfs) Read(reg register.Register) ([48]byte, error) {
	var r [48]byte
	if err := checkRTMR(reg); err != nil {
		return r, err
	}
	resp, err := tsmrtmr.GetDigest(c.client, reg.RTMRIndex())
	if err != nil {
		return r, fmt.Errorf("rtmr configfs-tsm: read %s: %w", reg, err)
	}
	if len(resp.Digest) != 48 {
		return r, fmt.Errorf("rtmr configfs-tsm: read %s: digest is %d bytes, want 48", reg, len(resp.Digest))
	}
	copy(r[:], resp.Digest)
	return r, nil
}

// RootedClient is a configfsi.Client for a configfs mounted at Root. Paths
// handed to it start with configfsi.TsmPrefix (/sys/kernel/config/tsm).
type RootedClient struct{ Root string }

func (c RootedClient) path(name string) (string, error) {
	const base = "/sys/kernel/config"
	clean := filepath.Clean(name)
	if clean != base && !strings.HasPrefix(clean, base+"/") {
		return "", fmt.Errorf("configfs path %q is outside %s", name, base)
	}
	return filepath.Join(c.Root, strings.TrimPrefix(clean, base)), nil
}

func (c RootedClient) unroot(p string) string {
	return filepath.Join("/sys/kernel/config", strings.TrimPrefix(p, filepath.Clean(c.Root)))
}

// MkdirTemp implements configfsi.Client.
func (c RootedClient) MkdirTemp(dir, pattern string) (string, error) {
	p, err := c.path(dir)
	if err != nil {
		return "", err
	}
	d, err := os.MkdirTemp(p, pattern)
	if err != nil {
		return "", err
	}
	return c.unroot(d), nil
}

// ReadFile implements configfsi.Client.
func (c RootedClient) ReadFile(name string) ([]byte, error) {
	p, err := c.path(name)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

// WriteFile implements configfsi.Client. configfs attributes already exist,
// so the file is opened for writing without creating or truncating it.
func (c RootedClient) WriteFile(name string, contents []byte) error {
	p, err := c.path(name)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(contents)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// RemoveAll implements configfsi.Client (configfs entries are removed with rmdir).
func (c RootedClient) RemoveAll(name string) error {
	p, err := c.path(name)
	if err != nil {
		return err
	}
	return os.Remove(p)
}

// ReadDir implements configfsi.Client.
func (c RootedClient) ReadDir(dirname string) ([]os.DirEntry, error) {
	p, err := c.path(dirname)
	if err != nil {
		return nil, err
	}
	return os.ReadDir(p)
}
