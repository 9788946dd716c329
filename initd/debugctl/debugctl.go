// Package debugctl is initd's dev-image debug channel: a virtio-serial port
// named "tdforge.debug" that `builder launch --simulate --debug-socket`
// attaches. It exists only in dev images (the policy says image.dev), is not
// reachable over the network, and accepts exactly one command:
//
//	kill <service>   SIGKILL the service's process (to test supervision)
//
// It never executes anything.
package debugctl

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// PortName is the virtio-serial port name.
const PortName = "tdforge.debug"

// Killer signals a supervised service.
type Killer interface {
	Signal(name string, sig unix.Signal) (int, error)
}

// Find returns the /dev node of the port named PortName, using sysfs (there
// is no udev to create /dev/virtio-ports links).
func Find(sysRoot, devRoot string) (string, error) {
	ports, _ := filepath.Glob(filepath.Join(sysRoot, "class/virtio-ports/*/name"))
	for _, p := range ports {
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(b)) == PortName {
			return filepath.Join(devRoot, filepath.Base(filepath.Dir(p))), nil
		}
	}
	return "", os.ErrNotExist
}

// Serve reads commands from rw until EOF, answering each with one line.
func Serve(rw io.ReadWriter, k Killer, log func(format string, a ...any)) {
	sc := bufio.NewScanner(rw)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch {
		case f[0] == "kill" && len(f) == 2:
			pid, err := k.Signal(f[1], unix.SIGKILL)
			if err != nil {
				fmt.Fprintf(rw, "error %v\n", err)
				continue
			}
			log("debug channel: killed service %s (pid %d)", f[1], pid)
			fmt.Fprintf(rw, "ok killed %s pid %d\n", f[1], pid)
		default:
			fmt.Fprintf(rw, "error unknown command %q (only: kill <service>)\n", sc.Text())
		}
	}
}
