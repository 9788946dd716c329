package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tdforge/tdforge/internal/cli"
)

func runShutdown(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("shutdown", flag.ContinueOnError)
	fs.SetOutput(stderr)
	qmp := fs.String("qmp", "", "QMP socket given to 'builder launch --qmp'")
	pidfile := fs.String("pidfile", "", "QEMU pid file given to 'builder launch --pidfile'")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for a clean power-off before killing QEMU")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: builder shutdown --qmp SOCK --pidfile FILE [--timeout 30s]\n\n")
		fs.PrintDefaults()
	}
	if code, ok := cli.ParseArgs(fs, args, -1); !ok {
		return code
	}
	if *qmp == "" || *pidfile == "" || fs.NArg() != 0 {
		fs.Usage()
		return cli.ExitUsage
	}
	pb, err := os.ReadFile(*pidfile)
	if err != nil {
		fmt.Fprintf(stderr, "builder shutdown: %v\n", err)
		return cli.ExitFail
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pb)))
	if err != nil || pid <= 1 {
		fmt.Fprintf(stderr, "builder shutdown: %s does not hold a PID\n", *pidfile)
		return cli.ExitFail
	}
	alive := func() bool { return syscall.Kill(pid, 0) == nil }
	if !alive() {
		fmt.Fprintf(stderr, "builder shutdown: QEMU (pid %d) is not running\n", pid)
		return cli.ExitOK
	}
	if err := qmpCommand(*qmp, "system_powerdown"); err != nil {
		fmt.Fprintf(stderr, "builder shutdown: %v; killing QEMU\n", err)
		syscall.Kill(pid, syscall.SIGKILL)
		return cli.ExitFail
	}
	deadline := time.Now().Add(*timeout)
	for time.Now().Before(deadline) {
		if !alive() || isZombie(pid) {
			fmt.Fprintf(stderr, "builder shutdown: guest powered off cleanly\n")
			return cli.ExitOK
		}
		time.Sleep(200 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	fmt.Fprintf(stderr, "builder shutdown: guest did not power off within %s; QEMU killed\n", *timeout)
	return cli.ExitFail
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// qmpCommand runs one QMP command: greeting, qmp_capabilities, command.
func qmpCommand(sock, cmd string) error {
	c, err := net.DialTimeout("unix", sock, 3*time.Second)
	if err != nil {
		return fmt.Errorf("QMP socket %s: %w", sock, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadBytes('\n'); err != nil {
		return fmt.Errorf("QMP greeting: %w", err)
	}
	for _, m := range []string{"qmp_capabilities", cmd} {
		b, _ := json.Marshal(map[string]string{"execute": m})
		if _, err := c.Write(append(b, '\n')); err != nil {
			return err
		}
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return fmt.Errorf("QMP %s: %w", m, err)
			}
			var resp map[string]any
			if json.Unmarshal(line, &resp) != nil {
				continue
			}
			if e, ok := resp["error"]; ok {
				return fmt.Errorf("QMP %s: %v", m, e)
			}
			if _, ok := resp["return"]; ok {
				break
			}
		}
	}
	return nil
}
