// Package netconf brings up initd's network: loopback always, then static
// addressing (netlink) or DHCP (u-root dhclient) on the policy's interface
// or the first virtio-net interface.
package netconf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/u-root/u-root/pkg/dhclient"
	"github.com/vishvananda/netlink"

	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// Loopback brings lo up.
func Loopback() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

// FirstVirtio returns the first interface (by name) bound to virtio_net,
// looking in sysClassNet (normally /sys/class/net).
func FirstVirtio(sysClassNet string) (string, error) {
	ents, err := os.ReadDir(sysClassNet)
	if err != nil {
		return "", err
	}
	var names []string
	for _, e := range ents {
		drv, err := os.Readlink(filepath.Join(sysClassNet, e.Name(), "device", "driver"))
		if err == nil && filepath.Base(drv) == "virtio_net" {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return "", errors.New("no virtio-net interface (is the virtio_net module in the policy's kernel modules?)")
	}
	sort.Strings(names)
	return names[0], nil
}

// Configure applies the policy's network mode.
func Configure(n policy.Network, console io.Writer) error {
	if err := Loopback(); err != nil {
		return err
	}
	if n.Mode == "none" {
		return nil
	}
	name := n.Interface
	if name == "" {
		var err error
		// The virtio device may appear a moment after the module loads.
		for i := 0; i < 50; i++ {
			if name, err = FirstVirtio("/sys/class/net"); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("network %s: %w", n.Mode, err)
		}
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("network interface %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("network interface %s up: %w", name, err)
	}
	switch n.Mode {
	case "static":
		pfx, err := netip.ParsePrefix(n.Address)
		if err != nil {
			return fmt.Errorf("network address %q: %w", n.Address, err)
		}
		ipn := &net.IPNet{IP: pfx.Addr().AsSlice(), Mask: net.CIDRMask(pfx.Bits(), pfx.Addr().BitLen())}
		if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: ipn}); err != nil {
			return fmt.Errorf("network %s: address %s: %w", name, n.Address, err)
		}
		if n.Gateway != "" {
			gw := net.ParseIP(n.Gateway)
			if err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw}); err != nil {
				return fmt.Errorf("network %s: default route via %s: %w", name, n.Gateway, err)
			}
		}
		fmt.Fprintf(console, "initd: network %s static %s gateway %q\n", name, n.Address, n.Gateway)
		return nil
	case "dhcp":
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cfg := dhclient.Config{Timeout: 5 * time.Second, Retries: 3}
		for r := range dhclient.SendRequests(ctx, []netlink.Link{link}, true, false, cfg, 10*time.Second) {
			if r.Err != nil {
				return fmt.Errorf("network %s: DHCP: %w", name, r.Err)
			}
			if err := r.Lease.Configure(); err != nil {
				return fmt.Errorf("network %s: apply DHCP lease: %w", name, err)
			}
			fmt.Fprintf(console, "initd: network %s DHCP lease %v\n", name, r.Lease)
			return nil
		}
		return fmt.Errorf("network %s: DHCP: no lease", name)
	}
	return fmt.Errorf("network mode %q is not supported", n.Mode)
}
