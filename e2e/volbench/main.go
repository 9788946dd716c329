// Command volbench is the init of the sealed-volume throughput benchmark
// (e2e BenchmarkVolumeThroughput): booted under QEMU TCG with the dev
// image's kernel and initramfs (its modules and boot policy) plus this
// program as /init, it writes the same amount sequentially to a raw disk
// (/dev/vda) and through a sealed volume stack (initd/volume.Map:
// dm-integrity J/HMAC-SHA256 under dm-crypt aes-xts-plain64) on /dev/vdb,
// and prints "volbench: plain-MBps=P sealed-MBps=S". Both disks start as
// zeros. It is a benchmark fixture, not part of any image.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdforge/tdforge/initd/volume"
	"github.com/tdforge/tdforge/internal/guest/devmapper"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/testutil/guestvm/guestinit"
)

// size is how much each run writes.
const size = 96 << 20

func main() {
	err := run()
	if err != nil {
		fmt.Printf("volbench: FAILED: %v\n", err)
	}
	guestinit.PowerOff()
}

func run() error {
	if err := guestinit.MountPseudo(); err != nil {
		return err
	}
	b, err := os.ReadFile(policy.Path)
	if err != nil {
		return err
	}
	var p struct {
		Kernel struct {
			Modules []string `json:"modules"`
		} `json:"kernel"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	for _, m := range p.Kernel.Modules {
		if err := guestinit.LoadModule(m); err != nil {
			fmt.Printf("volbench: module %v\n", err)
		}
	}
	for _, d := range []string{"vda", "vdb", "vdc", "vdd"} {
		dev, err := os.ReadFile("/sys/block/" + d + "/dev")
		if err != nil {
			return err
		}
		n, err := devmapper.ParseMajMin(string(dev))
		if err != nil {
			return err
		}
		if err := devmapper.EnsureNode("/dev/"+d, unix.S_IFBLK, n); err != nil {
			return err
		}
	}
	plain, err := write("/dev/vda")
	if err != nil {
		return fmt.Errorf("plain: %w", err)
	}
	keys, err := volume.DeriveKeys(bytes.Repeat([]byte{0x5a}, volume.KeySize), "00000000-0000-8000-8000-000000000000")
	if err != nil {
		return err
	}
	keys.Resource = "tdforge/bench/volume"
	node, provided, err := volume.Map("bench", "00000000-0000-8000-8000-000000000000", "/dev/vdb", keys)
	if err != nil {
		return err
	}
	if provided*512 < size {
		return fmt.Errorf("the sealed volume provides %d bytes, under %d", provided*512, size)
	}
	sealed, err := write(node)
	if err != nil {
		return fmt.Errorf("sealed: %w", err)
	}
	fmt.Printf("volbench: plain-MBps=%.2f sealed-MBps=%.2f\n", plain, sealed)
	if err := volume.Close("bench"); err != nil {
		return err
	}
	// Each layer alone, to show where the time goes.
	vdc, _ := devmapper.DevNum("/dev/vdc")
	vdd, _ := devmapper.DevNum("/dev/vdd")
	sectors := uint64(size / 512)
	ct, err := volume.CryptTable(keys.Resource, vdc, sectors, keys.Crypt)
	if err != nil {
		return err
	}
	cnode, err := devmapper.Create("bench-crypt-only", "", false, ct)
	if err != nil {
		return err
	}
	cryptOnly, err := write(cnode)
	if err != nil {
		return err
	}
	if _, err := devmapper.Create("bench-int-only", "", false, volume.IntegrityTable(vdd, 8, keys)); err != nil {
		return err
	}
	devmapper.Remove("bench-int-only")
	inode, err := devmapper.Create("bench-int-only", "", false, volume.IntegrityTable(vdd, sectors, keys))
	if err != nil {
		return err
	}
	intOnly, err := write(inode)
	if err != nil {
		return err
	}
	fmt.Printf("volbench: crypt-only-MBps=%.2f integrity-only-MBps=%.2f\n", cryptOnly, intOnly)
	return nil
}

// write writes size bytes to dev in 1 MiB sequential writes, then fsyncs,
// and returns MB/s.
func write(dev string) (float64, error) {
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := []byte(strings.Repeat("tdforge volbench", 1<<16)) // 1 MiB
	start := time.Now()
	for off := int64(0); off < size; off += int64(len(buf)) {
		if _, err := f.WriteAt(buf, off); err != nil {
			return 0, err
		}
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return float64(size) / 1e6 / time.Since(start).Seconds(), nil
}
