// Command testsvc is the service the initd boot test runs as "agent": it
// reports its credentials, environment and the measured state on the
// console, kills itself on its first run so initd must restart it, then
// idles.
package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/sim"
)

func main() {
	fmt.Printf("testsvc uid=%d gid=%d pid=%d sid=%d\n", os.Getuid(), os.Getgid(), os.Getpid(), mustSid())
	env := os.Environ()
	sort.Strings(env)
	fmt.Printf("testsvc env=%s\n", strings.Join(env, ";"))
	regs, err := sim.LoadRegisters(sim.Dir)
	if err != nil {
		fmt.Printf("testsvc registers error: %v\n", err)
	} else {
		fmt.Printf("testsvc mrtd=%s rtmr3=%s\n", regs.MRTD, regs.RTMR3)
	}
	raw, err := os.ReadFile("/run/tdforge/runtime-log.cel")
	if err == nil {
		var l *event.Log
		if l, err = event.ParseLog(raw); err == nil {
			r3, _ := sim.Decode48(regs.RTMR3)
			if err = l.Replay(r3[:]); err == nil {
				fmt.Printf("testsvc log-replay ok events=%d\n", len(l.Events()))
			}
		}
	}
	if err != nil {
		fmt.Printf("testsvc log error: %v\n", err)
	}
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		addrs, _ := i.Addrs()
		fmt.Printf("testsvc if %s %v\n", i.Name, addrs)
	}
	marker := filepath.Join(os.Getenv("HOME"), "ran-before")
	if _, err := os.Stat(marker); err != nil {
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			fmt.Printf("testsvc home not writable: %v\n", err)
		}
		fmt.Println("testsvc first-run: killing myself")
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	fmt.Println("testsvc second-run")
	for {
		time.Sleep(time.Hour)
	}
}

func mustSid() int {
	sid, _ := unix.Getsid(0)
	return sid
}
