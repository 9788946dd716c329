package boottest

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/internal/testutil/guestvm"
)

func run(t *testing.T, dir string, env []string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// modDeps reads the "depends=" list from a module's .modinfo section.
func modDeps(t *testing.T, path string) []string {
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("module %s: %v", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		t.Fatalf("module %s has no .modinfo", path)
	}
	b, _ := sec.Data()
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := strings.CutPrefix(string(kv), "depends="); ok && v != "" {
			return strings.Split(v, ",")
		}
	}
	return nil
}

// moduleOrder returns the .ko paths (relative to root) for want and their
// dependencies, dependencies first.
func moduleOrder(t *testing.T, root, modDir string, want []string) []string {
	index := map[string]string{}
	filepath.Walk(filepath.Join(root, modDir), func(p string, info os.FileInfo, err error) error {
		if err == nil && strings.HasSuffix(p, ".ko") {
			index[strings.ReplaceAll(strings.TrimSuffix(filepath.Base(p), ".ko"), "-", "_")] = p
		}
		return nil
	})
	var order []string
	done := map[string]bool{}
	var visit func(string)
	visit = func(m string) {
		m = strings.ReplaceAll(m, "-", "_")
		if done[m] {
			return
		}
		done[m] = true
		p, ok := index[m]
		if !ok {
			t.Fatalf("module %s not in the kernel package", m)
		}
		for _, d := range modDeps(t, p) {
			visit(d)
		}
		order = append(order, strings.TrimPrefix(p, root))
	}
	for _, m := range want {
		visit(m)
	}
	return order
}

type console struct {
	mu    sync.Mutex
	lines []string
	cond  chan struct{}
}

func (c *console) add(l string) {
	c.mu.Lock()
	c.lines = append(c.lines, l)
	c.mu.Unlock()
	select {
	case c.cond <- struct{}{}:
	default:
	}
}

func (c *console) find(re *regexp.Regexp) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, l := range c.lines {
		if re.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

func (c *console) wait(t *testing.T, what string, n int, d time.Duration) []string {
	t.Helper()
	re := regexp.MustCompile(what)
	deadline := time.After(d)
	for {
		if got := c.find(re); len(got) >= n {
			return got
		}
		select {
		case <-c.cond:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			c.mu.Lock()
			defer c.mu.Unlock()
			t.Fatalf("timed out after %v waiting for %d× %q; console:\n%s", d, n, what, strings.Join(c.lines, "\n"))
		}
	}
}

func TestBootUnderQEMU(t *testing.T) {
	k := guestvm.Kernel(t)
	work := t.TempDir()
	kroot, release := k.Root, k.Release

	// Static binaries: initd and the test service.
	initd := filepath.Join(work, "initd")
	svc := filepath.Join(work, "testsvc")
	cgo := []string{"CGO_ENABLED=0"}
	run(t, "..", cgo, "go", "build", "-trimpath", "-o", initd, ".")
	run(t, ".", cgo, "go", "build", "-trimpath", "-o", svc, "./testsvc")

	modPaths := moduleOrder(t, kroot, filepath.Join("lib", "modules", release), []string{"qemu_fw_cfg", "virtio_pci", "virtio_net", "button", "evdev"})
	p := &policy.Policy{
		Version: 1,
		Image:   policy.Image{Name: "boottest", Version: "1", Dev: true},
		TDX:     policy.TDX{Simulate: true},
		Kernel:  policy.Kernel{Release: release, Modules: modPaths},
		Network: policy.Network{Mode: "static", Address: "10.0.2.15/24", Gateway: "10.0.2.2"},
		Services: []policy.Service{{Name: "agent", Command: "/bin/testsvc", Args: []string{}, Env: map[string]string{"TDFORGE_TEST": "yes"},
			User: "agent", UID: 1000, GID: 1000, After: []string{}, Payloads: []string{}, Restart: "always"}},
		Agent: policy.Agent{Listen: ":8443", Upstream: "http://127.0.0.1:11434"},
	}
	pj, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := p.ExpectedEvents()
	wantRTMR3, _ := event.Replay(want)

	// The initramfs.
	var recs []cpio.Record
	for _, d := range []string{"bin", "dev", "etc", "etc/tdforge", "proc", "run", "sys", "tmp"} {
		recs = append(recs, cpio.Directory(d, 0o755))
	}
	recs = append(recs, cpio.CharDev("dev/console", 0o600, 5, 1))
	add := func(name, src string, perm uint64) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, cpio.StaticFile(name, string(b), perm))
	}
	add("init", initd, 0o755)
	add("bin/testsvc", svc, 0o755)
	recs = append(recs, cpio.StaticFile("etc/tdforge/policy.json", string(pj), 0o644))
	for _, m := range modPaths {
		add(strings.TrimPrefix(m, "/"), filepath.Join(kroot, m), 0o644)
	}
	initrd := filepath.Join(work, "initrd.cpio")
	os.WriteFile(initrd, guestvm.Archive(t, recs), 0o644)

	h := func(c string) string { return strings.Repeat(c, 48) }
	plat := sim.Platform{MRTD: h("a1"), RTMR: [3]string{h("b0"), h("b1"), h("b2")}, TDAttributes: "0000000010000000", XFAM: "e718060000000000", MRSEAM: h("00"), TEETCBSVN: strings.Repeat("00", 16)}
	platJSON, _ := json.Marshal(plat)
	platFile := filepath.Join(work, "platform.json")
	os.WriteFile(platFile, platJSON, 0o644)
	pki, err := sim.NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	pkiJSON, _ := json.Marshal(pki)
	pkiFile := filepath.Join(work, "pki.json")
	os.WriteFile(pkiFile, pkiJSON, 0o600)

	mon := filepath.Join(work, "mon.sock")
	qemu := exec.Command("qemu-system-x86_64", "-accel", "tcg", "-cpu", "qemu64", "-m", "1G", "-smp", "1",
		"-nographic", "-no-reboot", "-kernel", k.Vmlinuz, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet",
		"-fw_cfg", "name="+sim.FWCfgPlatform+",file="+platFile,
		"-fw_cfg", "name="+sim.FWCfgPKI+",file="+pkiFile,
		"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
		"-monitor", "unix:"+mon+",server,nowait", "-serial", "stdio", "-display", "none")
	qemu.Args = slicesWithout(qemu.Args, "-nographic")
	out, err := qemu.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	qemu.Stderr = qemu.Stdout
	if err := qemu.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		qemu.Process.Kill() // by PID; no-op if already gone
		<-exited
	})
	con := &console{cond: make(chan struct{}, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			con.add(strings.TrimRight(sc.Text(), "\r"))
		}
		exited <- qemu.Wait()
	}()

	const boot = 120 * time.Second
	con.wait(t, `^initd: phase total \d+ms$`, 1, boot)
	con.wait(t, `^initd: TDX simulator registers initialised from fw_cfg \(mrtd a1a1`, 1, time.Second)
	con.wait(t, `^initd: measuring into RTMR3 via simulator$`, 1, time.Second)
	con.wait(t, "^initd: rtmr3 "+hex.EncodeToString(wantRTMR3[:])+"$", 1, time.Second)
	for _, ph := range []string{"kernel", "modules", "verity", "network", "services"} {
		con.wait(t, `^initd: phase `+ph+` \d+ms$`, 1, time.Second)
	}
	// The service: right credentials, own session, clean environment.
	con.wait(t, `^\[agent\] testsvc uid=1000 gid=1000 pid=(\d+) sid=(\d+)$`, 2, 60*time.Second)
	for _, l := range con.find(regexp.MustCompile(`testsvc uid=`)) {
		var uid, gid, pid, sid int
		fmt.Sscanf(l, "[agent] testsvc uid=%d gid=%d pid=%d sid=%d", &uid, &gid, &pid, &sid)
		if pid != sid {
			t.Errorf("service is not a session leader: %s", l)
		}
	}
	wantEnv := "[agent] testsvc env=HOME=/run/home/agent;LANG=C.UTF-8;PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin;TDFORGE_TEST=yes;USER=agent"
	if got := con.find(regexp.MustCompile(`testsvc env=`)); len(got) < 1 || got[0] != wantEnv {
		t.Errorf("service environment:\n%v\nwant\n%s", got, wantEnv)
	}
	// Killed on its first run, restarted, and RTMR3 did not move.
	con.wait(t, `^\[agent\] testsvc first-run`, 1, time.Second)
	con.wait(t, `^initd: service agent \(pid \d+\) killed by signal killed$`, 1, time.Second)
	con.wait(t, `^\[agent\] testsvc second-run$`, 1, 10*time.Second)
	r3 := con.find(regexp.MustCompile(`^\[agent\] testsvc mrtd=`))
	wantLine := "[agent] testsvc mrtd=" + h("a1") + " rtmr3=" + hex.EncodeToString(wantRTMR3[:])
	if len(r3) != 2 || r3[0] != wantLine || r3[1] != wantLine {
		t.Errorf("registers seen by the service:\n%v\nwant twice:\n%s", r3, wantLine)
	}
	// initd quotes for the service's uid; the service cannot read the
	// simulator's keys itself.
	con.wait(t, `^initd: quoting via simulator on /run/tdforge/quote\.sock for uid 1000$`, 1, time.Second)
	if got := con.find(regexp.MustCompile(`^\[agent\] testsvc quote provider=simulator$`)); len(got) != 2 {
		t.Errorf("quotes through initd: %v", got)
	}
	if got := con.find(regexp.MustCompile(`^\[agent\] testsvc sim-state: .*permission denied$`)); len(got) != 2 {
		t.Errorf("the service's view of the simulator state: %v %v", got, con.find(regexp.MustCompile(`testsvc sim-state`)))
	}
	if got := con.find(regexp.MustCompile(`^\[agent\] testsvc log-replay ok events=1$`)); len(got) != 2 {
		t.Errorf("runtime log replay lines: %v %v", got, con.find(regexp.MustCompile(`testsvc (log|registers) error`)))
	}
	con.wait(t, `^\[agent\] testsvc if eth0 \[10\.0\.2\.15/24`, 1, time.Second)
	if n := len(con.find(regexp.MustCompile(`^initd: rtmr3 \+= `))); n != 1 {
		t.Errorf("%d RTMR3 extends, want exactly 1 (the config event)", n)
	}

	// Clean poweroff through the ACPI power button.
	c, err := net.Dial("unix", mon)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "system_powerdown\n")
	defer c.Close()
	con.wait(t, `^initd: ACPI power button pressed: shutting down$`, 1, 30*time.Second)
	con.wait(t, `^initd: stopping service agent`, 1, 10*time.Second)
	con.wait(t, `^initd: powering off$`, 1, 20*time.Second)
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("qemu exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("QEMU did not exit after poweroff")
	}
	for _, l := range con.find(regexp.MustCompile(`FAILED|FATAL|Kernel panic`)) {
		t.Errorf("console: %s", l)
	}
	for _, l := range con.find(regexp.MustCompile(`^initd: phase `)) {
		t.Log(l)
	}
}

func slicesWithout(s []string, drop string) []string {
	var out []string
	for _, x := range s {
		if x != drop {
			out = append(out, x)
		}
	}
	return out
}
