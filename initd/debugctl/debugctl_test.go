package debugctl

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

type fakeKiller map[string]int

func (f fakeKiller) Signal(name string, sig unix.Signal) (int, error) {
	if sig != unix.SIGKILL {
		return 0, errors.New("wrong signal")
	}
	pid, ok := f[name]
	if !ok {
		return 0, errors.New("no service " + name)
	}
	return pid, nil
}

type rw struct {
	in  *strings.Reader
	out bytes.Buffer
}

func (r *rw) Read(p []byte) (int, error)  { return r.in.Read(p) }
func (r *rw) Write(p []byte) (int, error) { return r.out.Write(p) }

func TestServe(t *testing.T) {
	c := &rw{in: strings.NewReader("kill ollama\nkill nope\nexec /bin/sh\n\n")}
	var logged []string
	Serve(c, fakeKiller{"ollama": 42}, func(f string, a ...any) { logged = append(logged, f) })
	want := "ok killed ollama pid 42\nerror no service nope\nerror unknown command \"exec /bin/sh\" (only: kill <service>)\n"
	if c.out.String() != want {
		t.Fatalf("got %q\nwant %q", c.out.String(), want)
	}
	if len(logged) != 1 {
		t.Fatalf("logged %v", logged)
	}
}

func TestFind(t *testing.T) {
	sys := t.TempDir()
	for name, port := range map[string]string{"vport0p1": "org.qemu.guest_agent.0", "vport1p1": PortName} {
		d := filepath.Join(sys, "class/virtio-ports", name)
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "name"), []byte(port+"\n"), 0o644)
	}
	got, err := Find(sys, "/dev")
	if err != nil || got != "/dev/vport1p1" {
		t.Fatalf("Find = %q, %v", got, err)
	}
	if _, err := Find(t.TempDir(), "/dev"); err == nil {
		t.Fatal("found a port in an empty sysfs")
	}
}
