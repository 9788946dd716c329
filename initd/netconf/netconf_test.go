package netconf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFirstVirtio(t *testing.T) {
	root := t.TempDir()
	mk := func(name, driver string) {
		dev := filepath.Join(root, name, "device")
		os.MkdirAll(dev, 0o755)
		if driver != "" {
			os.Symlink("../../../bus/virtio/drivers/"+driver, filepath.Join(dev, "driver"))
		}
	}
	mk("lo", "")
	mk("eth1", "virtio_net")
	mk("eth0", "e1000")
	mk("ens4", "virtio_net")
	got, err := FirstVirtio(root)
	if err != nil || got != "ens4" {
		t.Fatalf("FirstVirtio = %q, %v; want ens4", got, err)
	}
	os.RemoveAll(filepath.Join(root, "ens4"))
	os.RemoveAll(filepath.Join(root, "eth1"))
	if _, err := FirstVirtio(root); err == nil || !strings.Contains(err.Error(), "virtio_net module") {
		t.Fatalf("no virtio: %v", err)
	}
}
