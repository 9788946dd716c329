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

	pb "github.com/google/go-tdx-guest/proto/tdx"
	"golang.org/x/sys/unix"

	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/quote"
	"github.com/tdforge/tdforge/internal/tdx/sim"
)

// quoteThroughInitd asks initd's quoting socket for a quote, as the agent
// does, and parses it.
func quoteThroughInitd() (*pb.QuoteV4, error) {
	c, err := quote.OpenSocket(quote.DefaultSocket)
	if err != nil {
		return nil, err
	}
	raw, err := c.Attest([]byte("testsvc-nonce-16"), [32]byte{})
	if err != nil {
		return nil, err
	}
	fmt.Printf("testsvc quote provider=%s\n", c.Name())
	return quote.Parse(raw)
}

func main() {
	fmt.Printf("testsvc uid=%d gid=%d pid=%d sid=%d\n", os.Getuid(), os.Getgid(), os.Getpid(), mustSid())
	env := os.Environ()
	sort.Strings(env)
	fmt.Printf("testsvc env=%s\n", strings.Join(env, ";"))
	// The simulator's state holds its private keys: root-only.
	if _, err := sim.LoadRegisters(sim.Dir); err != nil {
		fmt.Printf("testsvc sim-state: %v\n", err)
	} else {
		fmt.Println("testsvc sim-state: READABLE")
	}
	// The registers come from a quote through initd's quoting socket.
	var r3 []byte
	q, err := quoteThroughInitd()
	if err != nil {
		fmt.Printf("testsvc registers error: %v\n", err)
	} else {
		body := q.GetTdQuoteBody()
		r3 = body.GetRtmrs()[3]
		fmt.Printf("testsvc mrtd=%x rtmr3=%x\n", body.GetMrTd(), r3)
	}
	raw, err := os.ReadFile("/run/tdforge/runtime-log.cel")
	if err == nil {
		var l *event.Log
		if l, err = event.ParseLog(raw); err == nil {
			if err = l.Replay(r3); err == nil {
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
