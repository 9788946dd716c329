package supervise

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/testutil/syncbuf"

	"golang.org/x/sys/unix"
)

type recorder struct {
	mu  sync.Mutex
	evs []Event
}

func (r *recorder) add(e Event) { r.mu.Lock(); r.evs = append(r.evs, e); r.mu.Unlock() }
func (r *recorder) kinds(name, kind string) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, e := range r.evs {
		if e.Name == name && e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// creds runs children as nobody when the test runs as root.
func creds() (uint32, uint32) {
	if os.Geteuid() == 0 {
		return 65534, 65534
	}
	return uint32(os.Getuid()), uint32(os.Getgid())
}

func spec(name, restart, path string, args ...string) Spec {
	u, g := creds()
	return Spec{Name: name, Path: path, Args: args, Env: []string{"PATH=/usr/bin:/bin", "HOME=/tmp", "USER=nobody", "LANG=C.UTF-8"}, UID: u, GID: g, Restart: restart}
}

func TestMain(m *testing.M) {
	// Orphans of services must be reparented to us, as they are to PID 1.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		panic(err)
	}
	os.Exit(m.Run())
}

func TestBackoffDoublesAndCaps(t *testing.T) {
	rec := &recorder{}
	con := &syncbuf.Buffer{}
	s := &Supervisor{Console: con, MinBackoff: 20 * time.Millisecond, MaxBackoff: 80 * time.Millisecond, ResetAfter: time.Hour, StopTimeout: time.Second, Notify: rec.add}
	t.Cleanup(s.Stop)
	if err := s.Start(spec("flaky", OnFailure, "/bin/false")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "6 starts", 10*time.Second, func() bool { return len(rec.kinds("flaky", "started")) >= 6 })
	s.Stop()
	var got []string
	for _, e := range rec.kinds("flaky", "restart-scheduled")[:5] {
		got = append(got, e.Delay.String())
	}
	if strings.Join(got, " ") != "20ms 40ms 80ms 80ms 80ms" {
		t.Fatalf("restart delays %v, want 20ms 40ms 80ms 80ms 80ms", got)
	}
	starts := rec.kinds("flaky", "started")
	if len(starts) < 6 {
		t.Fatalf("%d starts", len(starts))
	}
	if ex := rec.kinds("flaky", "exited"); ex[0].Status != "exited with status 1" {
		t.Fatalf("exit status %q", ex[0].Status)
	}
	if !strings.Contains(con.String(), "initd: restarting service flaky in 40ms") {
		t.Fatalf("console:\n%s", con.String())
	}
}

func TestBackoffResetsAfterHealthyRun(t *testing.T) {
	rec := &recorder{}
	s := &Supervisor{Console: &syncbuf.Buffer{}, MinBackoff: 20 * time.Millisecond, MaxBackoff: time.Second, ResetAfter: 50 * time.Millisecond, Notify: rec.add}
	t.Cleanup(s.Stop)
	if err := s.Start(spec("steady", Always, "/bin/sleep", "0.1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "3 restarts", 10*time.Second, func() bool { return len(rec.kinds("steady", "restart-scheduled")) >= 3 })
	s.Stop()
	for _, e := range rec.kinds("steady", "restart-scheduled")[:3] {
		if e.Delay != 20*time.Millisecond {
			t.Fatalf("delay %v after a healthy run, want the reset 20ms", e.Delay)
		}
	}
}

func TestRestartPolicies(t *testing.T) {
	rec := &recorder{}
	s := &Supervisor{Console: &syncbuf.Buffer{}, MinBackoff: 10 * time.Millisecond, Notify: rec.add}
	t.Cleanup(s.Stop)
	err := s.Start(spec("once", Never, "/bin/false"), spec("okexit", OnFailure, "/bin/true"), spec("missing", OnFailure, "/nonexistent/bin"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "exits", 5*time.Second, func() bool {
		return len(rec.kinds("once", "exited")) == 1 && len(rec.kinds("okexit", "exited")) == 1 && len(rec.kinds("missing", "start-failed")) >= 2
	})
	time.Sleep(100 * time.Millisecond)
	s.Stop()
	if n := len(rec.kinds("once", "started")); n != 1 {
		t.Fatalf("restart=never started %d times", n)
	}
	if n := len(rec.kinds("okexit", "started")); n != 1 {
		t.Fatalf("restart=on-failure after success started %d times", n)
	}
	if err := (&Supervisor{}).Start(spec("bad", "sometimes", "/bin/true")); err == nil {
		t.Fatal("bad restart policy accepted")
	}
}

func TestOutputEnvCredsAndFds(t *testing.T) {
	con := &syncbuf.Buffer{}
	rec := &recorder{}
	s := &Supervisor{Console: con, Notify: rec.add}
	// An inheritable-looking descriptor in the parent must not leak.
	leak, _ := os.Open("/etc/hostname")
	defer leak.Close()
	sp := spec("probe", Never, "/bin/sh", "-c", `env | sort; printf 'id %s:%s\n' "$(id -u)" "$(id -g)"; ls /proc/self/fd | tr '\n' ' '; echo; printf 'tail-without-newline'`)
	t.Cleanup(s.Stop)
	if err := s.Start(sp); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "probe exit", 5*time.Second, func() bool { return len(rec.kinds("probe", "exited")) == 1 })
	waitFor(t, "output", 2*time.Second, func() bool { return strings.Contains(con.String(), "tail-without-newline") })
	s.Stop()
	out := con.String()
	u, g := creds()
	for _, want := range []string{"[probe] HOME=/tmp\n", "[probe] LANG=C.UTF-8\n", "[probe] USER=nobody\n", "[probe] id " + strconv.Itoa(int(u)) + ":" + strconv.Itoa(int(g)) + "\n", "[probe] tail-without-newline\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q:\n%s", want, out)
		}
	}
	var envKeys []string
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(l, "[probe] "); ok && strings.Contains(rest, "=") && !strings.HasPrefix(rest, "id ") {
			envKeys = append(envKeys, strings.SplitN(rest, "=", 2)[0])
		}
	}
	// sh itself adds PWD (and may add SHLVL / _); nothing from our environment.
	for _, k := range envKeys {
		switch k {
		case "PATH", "HOME", "USER", "LANG", "PWD", "SHLVL", "_":
		default:
			t.Errorf("unexpected environment variable %s leaked into the service", k)
		}
	}
	// ls sees 0,1,2 and its own directory descriptor only.
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "[probe] 0 1 2 ") {
			if f := strings.Fields(strings.TrimPrefix(l, "[probe] ")); len(f) != 4 {
				t.Errorf("service had descriptors %v, want 0 1 2 + ls's own", f)
			}
			return
		}
	}
	t.Errorf("no fd listing in:\n%s", out)
}

func zombiesOf(pid int) []string {
	var z []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(pid) {
			z = append(z, e.Name())
		}
	}
	return z
}

func TestReapsOrphansAndStopsInReverse(t *testing.T) {
	con := &syncbuf.Buffer{}
	rec := &recorder{}
	var orphans sync.Map
	s := &Supervisor{Console: con, StopTimeout: 300 * time.Millisecond, Notify: rec.add,
		Orphan: func(pid int, st string) { orphans.Store(pid, st) }}
	// "parent" leaves an orphan that exits later: it is reparented to us and
	// must be reaped. "stubborn" ignores SIGTERM and needs SIGKILL.
	t.Cleanup(s.Stop)
	err := s.Start(
		spec("parent", Never, "/bin/sh", "-c", "sleep 0.3 & exit 0"),
		spec("calm", Always, "/bin/sleep", "100"),
		spec("stubborn", Always, "/bin/sh", "-c", `trap '' TERM; echo ready; while :; do sleep 1; done`),
	)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "orphan reaped", 5*time.Second, func() bool {
		n := 0
		orphans.Range(func(any, any) bool { n++; return true })
		return n >= 1
	})
	if z := zombiesOf(os.Getpid()); len(z) != 0 {
		t.Fatalf("zombie children left: %v", z)
	}
	waitFor(t, "stubborn ready", 5*time.Second, func() bool { return strings.Contains(con.String(), "[stubborn] ready") })
	start := time.Now()
	s.Stop()
	if time.Since(start) < 300*time.Millisecond {
		t.Fatal("stubborn service stopped before the SIGKILL timeout: SIGTERM was not ignored?")
	}
	stopped := rec.kinds("stubborn", "stopped")
	calm := rec.kinds("calm", "stopped")
	if len(stopped) != 1 || len(calm) != 1 {
		t.Fatalf("stopped events: %v %v", stopped, calm)
	}
	out := con.String()
	if strings.Index(out, "stopping service stubborn") > strings.Index(out, "stopping service calm") {
		t.Fatal("services not stopped in reverse start order")
	}
	if !strings.Contains(out, "service stubborn did not stop within 300ms, killing it") {
		t.Fatalf("console:\n%s", out)
	}
	if ex := rec.kinds("stubborn", "exited"); len(ex) != 1 || ex[0].Status != "killed by signal killed" {
		t.Fatalf("stubborn exit %v", ex)
	}
	if n := len(rec.kinds("calm", "started")); n != 1 {
		t.Fatalf("calm restarted during stop (%d starts)", n)
	}
	time.Sleep(50 * time.Millisecond)
	if z := zombiesOf(os.Getpid()); len(z) != 0 {
		t.Fatalf("zombie children after stop: %v", z)
	}
}
