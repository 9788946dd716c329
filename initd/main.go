// Command initd is the measured PID 1 of a tdforge guest. It mounts the
// pseudo filesystems, reads the boot policy, loads kernel modules, sets up
// and mounts every dm-verity payload while extending RTMR3 with one event
// each plus the runtime config event, configures the network, opens the
// encrypted payloads with keys from the policy's key broker (initd/unlock;
// one that stays locked gets a payload-locked event), opens the sealed
// volumes with keys from the same broker (initd/volume; one that does not
// open gets a volume-locked or volume-failed event) and then starts and
// supervises exactly the services the policy names. It never runs anything
// else. See docs/initd.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/u-root/u-root/pkg/kmodule"
	"github.com/u-root/u-root/pkg/mount"
	"golang.org/x/sys/unix"

	"github.com/tdforge/tdforge/initd/bootpolicy"
	"github.com/tdforge/tdforge/initd/debugctl"
	"github.com/tdforge/tdforge/initd/netconf"
	"github.com/tdforge/tdforge/initd/payload"
	"github.com/tdforge/tdforge/initd/powerbtn"
	"github.com/tdforge/tdforge/initd/quoted"
	"github.com/tdforge/tdforge/initd/rootfs"
	"github.com/tdforge/tdforge/initd/supervise"
	"github.com/tdforge/tdforge/initd/unlock"
	"github.com/tdforge/tdforge/initd/volume"
	"github.com/tdforge/tdforge/internal/guest/dmverity"
	"github.com/tdforge/tdforge/internal/guest/fwcfg"
	"github.com/tdforge/tdforge/internal/guest/rtmr"
	"github.com/tdforge/tdforge/internal/guest/volstatus"
	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/tdx/quote"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/internal/tdx/sim/firmware"
)

// RunDir holds the runtime log, the quoting socket and the republished
// CCEL, readable by the agent's group (the simulator state under it is
// root-only).
const RunDir = "/run/tdforge"

// AgentService is the policy service whose group may read RunDir.
const AgentService = "agent"

var console = &lockedWriter{w: os.Stdout}

type lockedWriter struct {
	mu sync.Mutex
	w  *os.File
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func logf(format string, a ...any) { fmt.Fprintf(console, "initd: "+format+"\n", a...) }

func phase(name string, d time.Duration) { logf("phase %s %dms", name, d.Milliseconds()) }

func uptime() time.Duration {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f, err := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	if err != nil {
		return 0
	}
	return time.Duration(f * float64(time.Second))
}

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "initd: must run as PID 1 (it is the guest's init)")
		os.Exit(2)
	}
	if err := rootfs.MountPseudo(); err != nil {
		fatal(nil, fmt.Errorf("pseudo filesystems: %w", err))
	}
	phase("kernel", uptime())
	// Ctrl-Alt-Del becomes SIGINT to us (handled as a clean poweroff).
	unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)

	p, err := bootpolicy.Load(policy.Path)
	if err != nil {
		fatal(nil, err)
	}
	logf("image %s %s (dev=%v, tdx simulate=%v)", p.Image.Name, p.Image.Version, p.Image.Dev, p.TDX.Simulate)

	start := time.Now()
	loadModules(p.Kernel.Modules)
	phase("modules", time.Since(start))

	agentUID, agentGID := -1, 0
	for _, s := range p.Services {
		if s.Name == AgentService {
			agentUID, agentGID = s.UID, s.GID
		}
	}
	if err := prepareRunDir(agentGID); err != nil {
		fatal(nil, err)
	}
	if p.TDX.Simulate {
		firmware.Logf = logf
		if regs, err := firmware.Init(fwcfg.Reader{}, sim.Dir); err != nil {
			logf("TDX simulator not initialised: %v", err)
		} else {
			logf("TDX simulator registers initialised from fw_cfg (mrtd %s)", regs.MRTD)
		}
	}
	be, err := rtmr.Open(rtmr.Options{Simulate: p.TDX.Simulate})
	if err != nil {
		fatal(nil, err)
	}
	logf("measuring into RTMR3 via %s", be.Name())

	start = time.Now()
	pass := &payload.Pass{Policy: p, Backend: be, Verity: dmverity.Kernel{}, Mount: mountPayload, RunDir: RunDir, FileGID: agentGID, Console: console}
	res, err := pass.Run()
	if err != nil {
		fatal(res, err)
	}
	logf("rtmr3 %x", res.RTMR3)
	phase("verity", time.Since(start))

	start = time.Now()
	if err := netconf.Configure(p.Network, console); err != nil {
		logf("network FAILED: %v", err)
	}
	phase("network", time.Since(start))

	cel := publishCCEL(p.TDX.Simulate, agentGID)
	prov, provErr := startQuoting(p.TDX.Simulate, agentUID, agentGID)
	// One Unlocker for the payloads and the volumes: a broker it found
	// unreachable or untrusted is tried once more per key, not per schedule.
	unl := newUnlocker(p, prov, provErr, cel)

	if len(res.Pending) > 0 {
		start = time.Now()
		var pu payload.Unlocker // nil, not a nil *unlock.Unlocker: Open then locks them
		if unl != nil {
			pu = unl
		}
		if err := pass.Open(context.Background(), res, pu); err != nil {
			fatal(res, err)
		}
		logf("rtmr3 %x", res.RTMR3)
		phase("unlock", time.Since(start))
	}

	var volumesDown map[string]string
	if len(p.Volumes) > 0 {
		start = time.Now()
		if volumesDown, err = openVolumes(p, pass, res, unl); err != nil {
			fatal(res, err)
		}
		logf("rtmr3 %x", res.RTMR3)
		phase("volumes", time.Since(start))
	}

	start = time.Now()
	sup, err := startServices(p, res, agentGID, volumesDown)
	if err != nil {
		fatal(res, err)
	}
	phase("services", time.Since(start))
	phase("total", uptime())
	if p.Image.Dev {
		startDebugChannel(sup)
	}

	waitForShutdown()
	shutdown(sup)
}

// publishCCEL republishes the firmware's CCEL, root-only under
// /sys/firmware/acpi/tables, for the agent's group, or why there is none,
// and returns the same for initd's own evidence (the key broker's).
func publishCCEL(simulate bool, agentGID int) quoted.CCEL {
	sources := []quoted.CCELSource{quoted.ACPISource(quoted.DefaultACPITables)}
	if simulate {
		sources = append(sources, quoted.CCELSource{Table: filepath.Join(sim.Dir, sim.CCELTableFile), Log: filepath.Join(sim.Dir, sim.CCELFile)})
	}
	c, err := quoted.PublishCCEL(quoted.DefaultCCELDir, agentGID, sources...)
	if err != nil {
		logf("CCEL not published: %v", err)
		return quoted.CCEL{Absent: fmt.Sprintf("no CCEL: initd could not republish it: %v", err)}
	}
	if c.Absent != "" {
		logf("CCEL absent: %s", c.Absent)
	}
	return c
}

// startQuoting is the guest's one privileged quoting path: initd opens the
// quote backend (root-only on hardware; the simulator's keys are root-only
// too) and serves it to the agent's uid on quote.DefaultSocket
// (initd/quoted). It returns the quote backend (or why there is none) for
// initd's own quotes (the key broker's).
func startQuoting(simulate bool, agentUID, agentGID int) (quote.Provider, error) {
	prov, openErr := quote.Open(simulate)
	if openErr != nil {
		logf("quote backend FAILED: %v", openErr)
	}
	if agentUID < 0 {
		logf("quoting socket not started: the policy has no %q service", AgentService)
		return prov, openErr
	}
	srv := &quoted.Server{Provider: prov, OpenErr: openErr, UID: agentUID, Logf: logf}
	ln, err := quoted.Listen(quote.DefaultSocket, agentGID)
	if err != nil {
		logf("quoting socket FAILED: %v", err)
		return prov, openErr
	}
	if prov != nil {
		logf("quoting via %s on %s for uid %d", prov.Name(), quote.DefaultSocket, agentUID)
	}
	go func() {
		if err := srv.Serve(ln); err != nil {
			logf("quoting socket stopped: %v", err)
		}
	}()
	return prov, openErr
}

// newUnlocker asks the policy's key broker for payload keys, quoting with
// prov; nil when the policy names none. It runs before any service starts,
// so no agent quote competes.
func newUnlocker(p *policy.Policy, prov quote.Provider, provErr error, cel quoted.CCEL) *unlock.Unlocker {
	if p.KeyBroker == nil {
		return nil // validation forbids this; every encrypted payload and volume stays locked
	}
	return &unlock.Unlocker{
		Broker: *p.KeyBroker, Logf: logf,
		CCELTable: cel.Table, CCELLog: cel.Log, CCELAbsent: cel.Absent,
		Quote: func(rd [64]byte) ([]byte, error) {
			if prov == nil {
				return nil, fmt.Errorf("no quote backend: %v", provErr)
			}
			return prov.Quote(rd)
		},
	}
}

// openVolumes opens the policy's sealed volumes (initd/volume) in policy
// order, with keys from the policy's key broker, after the encrypted
// payloads. A volume that does not open is measured into RTMR3 with its
// reason (volume-locked: no key; volume-failed: the key did not open it),
// never reformatted. It returns the volumes that did not open and why; an
// error only when RTMR3 or a status file could not be written.
func openVolumes(p *policy.Policy, pass *payload.Pass, res *payload.Result, u *unlock.Unlocker) (map[string]string, error) {
	down := map[string]string{}
	uids := map[string][2]int{}
	for _, s := range p.Services {
		uids[s.Name] = [2]int{s.UID, s.GID}
	}
	o := &volume.Opener{
		StatusDir: volstatus.Dir, Logf: logf,
		Owner: func(user string) (int, int, bool) { u, ok := uids[user]; return u[0], u[1], ok },
		Fetch: func(ctx context.Context, resource string) ([]byte, error) {
			if u == nil {
				return nil, errors.New("the policy names no key broker")
			}
			cel, err := res.Log.MarshalBinary()
			if err != nil {
				return nil, fmt.Errorf("runtime log: %v", err)
			}
			return u.Fetch(ctx, resource, cel)
		},
	}
	for _, v := range p.Volumes {
		r, err := o.Open(context.Background(), v)
		if err != nil {
			return down, err
		}
		if r.Status.State == volstatus.Mounted {
			mounted = append(mounted, v.Mount)
			volumes = append(volumes, v.Name)
			continue
		}
		down[v.Name] = r.Status.String()
		kind := event.KindVolumeFailed
		if r.Status.State == volstatus.Locked {
			kind = event.KindVolumeLocked
		}
		logf("volume %s NOT mounted: %s", v.Name, r.Status)
		if err := pass.Measure(res, event.Reasoned(kind, v.Name, r.Status.Reason)); err != nil {
			return down, err
		}
	}
	return down, nil
}

func loadModules(mods []string) {
	for _, m := range mods {
		f, err := os.Open(m)
		if err != nil {
			logf("kernel module %s FAILED: %v", m, err)
			continue
		}
		err = kmodule.FileInit(f, "", 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			logf("kernel module %s FAILED: %v", m, err)
		}
	}
}

func prepareRunDir(gid int) error {
	if err := os.MkdirAll(RunDir, 0o750); err != nil {
		return fmt.Errorf("%s: %w", RunDir, err)
	}
	if err := os.Chown(RunDir, 0, gid); err != nil {
		return fmt.Errorf("%s: %w", RunDir, err)
	}
	return os.Chmod(RunDir, 0o750|os.ModeSetgid)
}

func mountPayload(dev, mp, fstype string) error {
	if _, err := mount.Mount(dev, mp, fstype, "", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID); err != nil {
		return err
	}
	mounted = append(mounted, mp)
	return nil
}

func startServices(p *policy.Policy, res *payload.Result, agentGID int, volumesDown map[string]string) (*supervise.Supervisor, error) {
	users := rootfs.Users(p)
	if err := rootfs.WriteAccounts("/etc", users, nil); err != nil {
		return nil, fmt.Errorf("/etc/passwd: %w", err)
	}
	if err := rootfs.MakeHomes(users); err != nil {
		return nil, err
	}
	order, err := p.StartOrder()
	if err != nil {
		return nil, err
	}
	byName := map[string]policy.Service{}
	for _, s := range p.Services {
		byName[s.Name] = s
	}
	var specs []supervise.Spec
	for _, name := range order {
		s := byName[name]
		var missing []string
		for _, pl := range s.Payloads {
			if !res.Mounted[pl] {
				missing = append(missing, pl)
			}
		}
		if len(missing) > 0 {
			logf("service %s NOT started: payload(s) %s failed or locked", s.Name, strings.Join(missing, ", "))
			continue
		}
		// A volume's users stay down while it is closed, except the
		// agent, which serves without it and reports why (/readyz).
		if closed := volume.Blocking(p, s.Name, AgentService, volumesDown); len(closed) > 0 {
			logf("service %s NOT started: volume(s) %s", s.Name, strings.Join(closed, ", "))
			continue
		}
		specs = append(specs, supervise.Spec{
			Name: s.Name, Path: s.Command, Args: s.Args, Env: rootfs.Env(s),
			Dir: "/run/home/" + s.User, UID: uint32(s.UID), GID: uint32(s.GID), Restart: s.Restart,
		})
	}
	sup := &supervise.Supervisor{Console: console}
	if err := sup.Start(specs...); err != nil {
		return nil, err
	}
	return sup, nil
}

// startDebugChannel serves the dev-only virtio-serial debug port, if the
// launcher attached one. Non-dev images never open it.
func startDebugChannel(sup *supervise.Supervisor) {
	dev, err := debugctl.Find("/sys", "/dev")
	if err != nil {
		return
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		logf("debug channel %s: %v", dev, err)
		return
	}
	logf("DEV image: debug channel %s open (kill <service> only)", dev)
	go func() {
		for {
			debugctl.Serve(f, sup, logf)
			time.Sleep(200 * time.Millisecond) // host side not connected yet: EOF
		}
	}()
}

func waitForShutdown() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGPWR)
	press := make(chan struct{}, 1)
	// The power button device appears once the button and evdev modules load.
	if devs := powerbtn.Find("/sys/class/input", "/dev"); len(devs) > 0 {
		if err := powerbtn.Watch(devs, func() { press <- struct{}{} }); err != nil {
			logf("ACPI power button: %v", err)
		} else {
			logf("ACPI power button armed (%s)", strings.Join(devs, ", "))
		}
	}
	select {
	case s := <-sig:
		logf("received %v: shutting down", s)
	case <-press:
		logf("ACPI power button pressed: shutting down")
	}
}

// shutdown stops services in reverse order, unmounts payloads, syncs and
// powers off. It never returns.
func shutdown(sup *supervise.Supervisor) {
	if sup != nil {
		sup.Stop()
	}
	for i := len(mounted) - 1; i >= 0; i-- {
		if err := mount.Unmount(mounted[i], false, true); err != nil {
			logf("unmount %s: %v", mounted[i], err)
		}
	}
	if len(volumes) > 0 {
		unix.Sync()
	}
	for _, name := range volumes {
		if err := volume.Close(name); err != nil {
			logf("volume %s: %v", name, err)
		}
	}
	unix.Sync()
	logf("powering off")
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

// mounted lists payload and volume mount points in mount order; volumes
// lists the open volumes (closed after the unmounts).
var (
	mounted []string
	volumes []string
)

// fatal reports a boot failure that forbids starting services and powers off.
func fatal(_ *payload.Result, err error) {
	logf("FATAL: %v", err)
	logf("no service started")
	shutdown(nil)
}
