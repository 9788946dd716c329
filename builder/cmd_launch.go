package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/image/gptdisk"
	"github.com/tdforge/tdforge/internal/image/imagedir"
)

type launchOpts struct {
	dir          string
	simulate     bool
	run          bool
	detach       bool
	port         int
	httpPort     int
	serial       string
	pidfile      string
	waitReady    time.Duration
	cpus         int
	memory       string
	qemu         string
	disk         string
	extraAppnd   string
	qmp          string
	debugSock    string
	extraDevices listFlag

	// Set by launchCommand under --simulate: the launch's private state
	// directory (fw_cfg files, the simulator's private keys) and where the
	// simulator root certificate was written.
	simState, simRoot string
}

func runLaunch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("launch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o launchOpts
	fs.BoolVar(&o.simulate, "simulate", false, "run under plain QEMU TCG with the TDX simulator (images built with tdx { simulate = true })")
	fs.BoolVar(&o.run, "run", false, "run QEMU instead of printing the command line")
	fs.BoolVar(&o.detach, "detach", false, "with --run: start QEMU in the background and return (see --pidfile)")
	fs.IntVar(&o.port, "port", 8443, "host port forwarded to the agent's HTTPS port")
	fs.IntVar(&o.httpPort, "http-port", 0, "host port forwarded to the agent's plain HTTP port (dev images with agent.plain_http)")
	fs.StringVar(&o.serial, "serial", "", "write the guest console to this file (default: stdout)")
	fs.StringVar(&o.pidfile, "pidfile", "", "write QEMU's PID here (with --simulate, the launch's simulator root certificate goes next to it as "+imagedir.SimRootFile+")")
	fs.DurationVar(&o.waitReady, "wait-ready", 0, "with --run --detach: wait up to this long for the agent's /readyz")
	fs.IntVar(&o.cpus, "cpus", 0, "refuse to launch unless this equals the manifest's vm.cpus (reference values assume it)")
	fs.StringVar(&o.memory, "memory", "", "refuse to launch unless this equals the manifest's vm.memory")
	fs.StringVar(&o.qemu, "qemu", "qemu-system-x86_64", "QEMU binary")
	fs.StringVar(&o.disk, "disk", "", "payload disk to attach instead of DIR/disk.raw (for tamper tests)")
	fs.StringVar(&o.debugSock, "debug-socket", "", "with --simulate on a dev image: attach the dev-only debug channel (virtio-serial port tdforge.debug) at this unix socket")
	fs.Var(&o.extraDevices, "extra-device", "add a QEMU -device (repeatable; changes the VM the reference values assume: for tamper tests)")
	fs.StringVar(&o.qmp, "qmp", "", "create a QMP control socket at this path (used by 'builder shutdown')")
	fs.StringVar(&o.extraAppnd, "cmdline", "", "replace the kernel command line (changes RTMR2; for tamper tests)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: builder launch [--simulate] [--run [--detach]] [flags] DIR\n\nPrints (or runs) the QEMU command line for the image in DIR.\n\n")
		fs.PrintDefaults()
	}
	if code, ok := cli.ParseArgs(fs, args, 1); !ok {
		return code
	}
	o.dir = fs.Arg(0)
	argv, cleanup, err := launchCommand(&o)
	if err != nil {
		if cleanup != nil {
			cleanup()
		}
		return fail(stderr, "launch", err)
	}
	if !o.run {
		// The printed command reads the simulated platform's fw_cfg files,
		// so they are kept; say where.
		if o.simulate {
			fmt.Fprintf(stderr, "builder launch: the simulated platform's files, its private keys included, are in %s (remove it when QEMU has started)\n", o.simState)
			fmt.Fprintf(stdout, "# simulator root certificate for verifier --sim-root: %s\n", o.simRoot)
		}
		fmt.Fprintln(stdout, shellQuote(argv))
		return cli.ExitOK
	}
	if o.simulate {
		fmt.Fprintf(stdout, "builder launch: simulator root certificate for verifier --sim-root: %s\n", o.simRoot)
	}
	if cleanup != nil {
		defer cleanup()
	}
	return execQEMU(ctx, &o, argv, stdout, stderr)
}

// launchCommand builds the QEMU argv. cleanup removes temporary files (the
// simulated platform); with --detach they are kept for QEMU's lifetime.
func launchCommand(o *launchOpts) ([]string, func(), error) {
	info, err := imagedir.ReadInfo(o.dir)
	if err != nil {
		return nil, nil, err
	}
	if o.cpus != 0 && o.cpus != info.VM.CPUs {
		return nil, nil, fmt.Errorf("--cpus %d differs from the manifest's vm.cpus = %d; the reference values assume %d (rebuild with a different vm block instead)", o.cpus, info.VM.CPUs, info.VM.CPUs)
	}
	if o.memory != "" {
		mb, err := parseMeasureMemory(o.memory)
		if err != nil {
			return nil, nil, fmt.Errorf("--memory: %w", err)
		}
		if mb != info.VM.MemoryMB {
			return nil, nil, fmt.Errorf("--memory %s differs from the manifest's vm.memory = %d MiB; the reference values assume it (rebuild with a different vm block instead)", o.memory, info.VM.MemoryMB)
		}
	}
	if o.simulate && !info.TDX.Simulate {
		return nil, nil, fmt.Errorf("image %s was built without tdx { simulate = true }; it can only run on a TDX host (drop --simulate)", info.Image.Name)
	}
	if !o.simulate && info.TDX.Simulate {
		return nil, nil, fmt.Errorf("image %s is a simulated dev image (tdx { simulate = true }); launch it with --simulate", info.Image.Name)
	}
	abs := func(n string) string { p, _ := filepath.Abs(filepath.Join(o.dir, n)); return p }
	cmdlineB, err := os.ReadFile(abs(imagedir.Cmdline))
	if err != nil {
		return nil, nil, err
	}
	cmdline := strings.TrimRight(string(cmdlineB), "\n")
	if o.extraAppnd != "" {
		cmdline = o.extraAppnd
	}
	disk := abs(imagedir.Disk)
	if o.disk != "" {
		disk, _ = filepath.Abs(o.disk)
	}
	// The disk is attached read-only unless the image has sealed volumes:
	// their regions live on it, written in place (never recopied), so the
	// volumes persist from one launch to the next (docs/volume.md).
	readonly := "on"
	if l, err := gptdisk.ReadLayout(abs(imagedir.Payloads)); err == nil && len(l.Volumes) > 0 {
		readonly = "off"
	}
	fwd := fmt.Sprintf("user,id=net0,hostfwd=tcp:127.0.0.1:%d-:%d", o.port, info.Agent.HTTPSPort)
	if o.httpPort != 0 {
		if info.Agent.HTTPPort == 0 {
			return nil, nil, fmt.Errorf("--http-port: the image's agent has no plain HTTP listener (agent.plain_http is unset)")
		}
		fwd += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", o.httpPort, info.Agent.HTTPPort)
	}
	argv := []string{o.qemu}
	if o.simulate {
		// One host thread for all vCPUs: with multi-threaded TCG, Linux 6.12's
		// live code patching (int3 breakpoints removed while another vCPU
		// runs the patched code) now and then oopses at boot ("Oops: int3").
		// The guest still sees cpus vCPUs, so the measured ACPI tables are
		// unchanged.
		argv = append(argv, "-accel", "tcg,thread=single", "-cpu", "qemu64", "-machine", "q35")
	} else {
		argv = append(argv, "-accel", "kvm", "-cpu", "host",
			"-machine", "q35,kernel-irqchip=split,confidential-guest-support=tdx0,memory-backend=ram0",
			"-object", "tdx-guest,id=tdx0",
			"-object", fmt.Sprintf("memory-backend-memfd,id=ram0,size=%dM", info.VM.MemoryMB))
	}
	argv = append(argv,
		"-smp", strconv.Itoa(info.VM.CPUs), "-m", fmt.Sprintf("%dM", info.VM.MemoryMB),
		"-nographic", "-no-reboot", "-nodefaults",
		"-bios", abs(imagedir.Firmware),
		"-kernel", abs(imagedir.Kernel), "-initrd", abs(imagedir.Initrd), "-append", cmdline,
		"-drive", "file="+disk+",if=none,id=payload,format=raw,readonly="+readonly,
		"-device", "virtio-blk-pci,drive=payload",
		"-netdev", fwd, "-device", "virtio-net-pci,netdev=net0",
	)
	if o.debugSock != "" && !o.simulate {
		return nil, nil, fmt.Errorf("--debug-socket is only for dev images under --simulate")
	}
	if o.simulate {
		// The simulator platform always has the dev debug port, so the VM
		// (and so its ACPI tables, measured into RTMR0) is the same whether
		// or not a debugger is attached; unattached it goes nowhere.
		chardev := "null,id=dbg"
		if o.debugSock != "" {
			d, _ := filepath.Abs(o.debugSock)
			chardev = "socket,id=dbg,path=" + d + ",server=on,wait=off"
		}
		argv = append(argv, "-device", "virtio-serial-pci,id=vser0", "-chardev", chardev,
			"-device", "virtserialport,bus=vser0.0,chardev=dbg,name=tdforge.debug")
	}
	for _, d := range o.extraDevices {
		argv = append(argv, "-device", d)
	}
	if o.qmp != "" {
		q, _ := filepath.Abs(o.qmp)
		argv = append(argv, "-qmp", "unix:"+q+",server=on,wait=off")
	}
	if o.serial != "" {
		s, _ := filepath.Abs(o.serial)
		argv = append(argv, "-serial", "file:"+s)
	} else {
		argv = append(argv, "-serial", "stdio")
	}
	var cleanup func()
	if o.simulate {
		files, tmp, root, err := simulatedPlatform(o.dir, info, cmdline)
		if tmp != "" {
			cleanup = func() { os.RemoveAll(tmp) }
		}
		if err != nil {
			return nil, cleanup, err
		}
		for _, f := range files {
			argv = append(argv, "-fw_cfg", "name="+f[0]+",file="+f[1])
		}
		o.simState, o.simRoot = tmp, simRootPath(o, tmp)
		if err := fsutil.WriteFile(o.simRoot, root, 0o644); err != nil {
			return nil, cleanup, fmt.Errorf("simulator root certificate: %w", err)
		}
	}
	return argv, cleanup, nil
}

// simRootPath is where a simulated launch writes its root certificate:
// next to --pidfile; without one, in the kept state directory when only
// printing the command, else in the current directory.
func simRootPath(o *launchOpts, stateDir string) string {
	dir := "."
	switch {
	case o.pidfile != "":
		dir = filepath.Dir(o.pidfile)
	case !o.run:
		dir = stateDir
	}
	p, err := filepath.Abs(filepath.Join(dir, imagedir.SimRootFile))
	if err != nil {
		return filepath.Join(dir, imagedir.SimRootFile)
	}
	return p
}

func execQEMU(ctx context.Context, o *launchOpts, argv []string, stdout, stderr io.Writer) int {
	cmd := exec.Command(argv[0], argv[1:]...)
	if o.detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if o.serial == "" {
			fmt.Fprintln(stderr, "builder launch: --detach needs --serial FILE for the console")
			return cli.ExitUsage
		}
	} else {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "builder launch: starting %s: %v (install qemu-system-x86)\n", argv[0], err)
		return cli.ExitFail
	}
	if o.pidfile != "" {
		if err := os.WriteFile(o.pidfile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
			cmd.Process.Kill()
			fmt.Fprintf(stderr, "builder launch: %v\n", err)
			return cli.ExitFail
		}
	}
	if o.detach {
		// QEMU reads the -fw_cfg files at machine init; the deferred cleanup
		// then removes the private state directory, and with it the
		// simulator's private keys, once the agent is ready (or after 2 s).
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if o.waitReady > 0 {
			if err := waitReady(ctx, o.port, o.waitReady, exited); err != nil {
				cmd.Process.Kill()
				fmt.Fprintf(stderr, "builder launch: %v (console: %s)\n", err, o.serial)
				return cli.ExitFail
			}
			fmt.Fprintf(stderr, "builder launch: agent ready on https://127.0.0.1:%d (QEMU pid %d)\n", o.port, cmd.Process.Pid)
		} else {
			// QEMU reads -fw_cfg files during machine init; give it time
			// before the deferred cleanup removes them.
			time.Sleep(2 * time.Second)
			fmt.Fprintf(stderr, "builder launch: QEMU pid %d\n", cmd.Process.Pid)
		}
		cmd.Process.Release()
		return cli.ExitOK
	}
	go func() {
		<-ctx.Done()
		cmd.Process.Signal(syscall.SIGTERM)
	}()
	if err := cmd.Wait(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		return cli.ExitFail
	}
	return cli.ExitOK
}

// waitReady polls the agent's /readyz through the port forward.
func waitReady(ctx context.Context, port int, limit time.Duration, exited <-chan error) error {
	deadline := time.Now().Add(limit)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // readiness only; verification is the verifier's job
		DialContext:     (&net.Dialer{Timeout: time.Second}).DialContext,
	}}
	url := fmt.Sprintf("https://127.0.0.1:%d/readyz", port)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("QEMU exited before the agent was ready: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("agent not ready at %s after %s", url, limit)
}

func shellQuote(argv []string) string {
	var b strings.Builder
	for i, a := range argv {
		if i > 0 {
			b.WriteString(" ")
		}
		if a != "" && !strings.ContainsAny(a, " \t\n'\"\\$`;&|<>()*?[]{}!#~") {
			b.WriteString(a)
			continue
		}
		b.WriteString("'" + strings.ReplaceAll(a, "'", `'\''`) + "'")
	}
	return b.String()
}
