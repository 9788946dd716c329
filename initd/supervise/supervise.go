// Package supervise runs initd's services: each in its own session with its
// own credentials, a clean environment, no inherited file descriptors and
// its output line-prefixed to the console. It restarts services with
// exponential backoff, reaps every child (initd is PID 1, so orphans land
// here too) and stops services in reverse start order.
package supervise

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Restart policies.
const (
	Always    = "always"
	OnFailure = "on-failure"
	Never     = "never"
)

// Spec is one service to run.
type Spec struct {
	Name    string
	Path    string   // absolute executable path
	Args    []string // argv[1:]
	Env     []string // complete environment, KEY=VALUE
	Dir     string   // working directory
	UID     uint32
	GID     uint32
	Groups  []uint32 // supplementary groups
	Restart string   // Always, OnFailure or Never
}

// Event reports a lifecycle change (for logs and tests).
type Event struct {
	Name   string
	Kind   string // "started", "start-failed", "exited", "restart-scheduled", "stopped"
	PID    int
	Status string        // exit status for "exited"
	Delay  time.Duration // for "restart-scheduled"
}

// Supervisor owns the services. Set the fields before Start.
type Supervisor struct {
	// Console receives "[name] line" output and supervisor messages.
	Console io.Writer
	// MinBackoff doubles up to MaxBackoff between restarts and is reset
	// after a service stayed up ResetAfter. Defaults: 250ms, 30s, 60s.
	MinBackoff, MaxBackoff, ResetAfter time.Duration
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL (default 10s).
	StopTimeout time.Duration
	// Notify, if set, is called (without locks held) on every Event.
	Notify func(Event)
	// Orphan, if set, is called for reaped processes that are not services.
	Orphan func(pid int, status string)

	mu       sync.Mutex
	out      sync.Mutex
	order    []*service
	byPID    map[int]*service
	stopping bool
	started  bool
	quit     chan struct{}
	loopDone chan struct{}
}

type service struct {
	spec    Spec
	pid     int
	start   time.Time
	backoff time.Duration
	timer   *time.Timer
	exited  chan struct{} // closed when the current process is reaped
}

func (s *Supervisor) defaults() {
	if s.MinBackoff <= 0 {
		s.MinBackoff = 250 * time.Millisecond
	}
	if s.MaxBackoff < s.MinBackoff {
		s.MaxBackoff = 30 * time.Second
		if s.MaxBackoff < s.MinBackoff {
			s.MaxBackoff = s.MinBackoff
		}
	}
	if s.ResetAfter <= 0 {
		s.ResetAfter = 60 * time.Second
	}
	if s.StopTimeout <= 0 {
		s.StopTimeout = 10 * time.Second
	}
	if s.Console == nil {
		s.Console = os.Stdout
	}
}

// Start begins reaping and starts the services in the given order. A
// service that cannot be started is reported and retried per its policy.
func (s *Supervisor) Start(specs ...Spec) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("supervise: already started")
	}
	for _, sp := range specs {
		switch sp.Restart {
		case Always, OnFailure, Never:
		default:
			s.mu.Unlock()
			return fmt.Errorf("supervise: service %s: restart %q must be always, on-failure or never", sp.Name, sp.Restart)
		}
	}
	s.defaults()
	s.started = true
	s.byPID = map[int]*service{}
	s.quit = make(chan struct{})
	s.loopDone = make(chan struct{})
	s.mu.Unlock()

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGCHLD)
	go s.reapLoop(sigc)

	for _, sp := range specs {
		sv := &service{spec: sp, backoff: s.MinBackoff}
		s.mu.Lock()
		s.order = append(s.order, sv)
		ev := s.spawnLocked(sv)
		s.mu.Unlock()
		s.emit(ev...)
	}
	return nil
}

// spawnLocked starts sv's process; on failure it schedules a retry.
func (s *Supervisor) spawnLocked(sv *service) []Event {
	if s.stopping {
		return nil
	}
	pid, err := s.fork(sv)
	if err != nil {
		s.printf("initd: service %s failed to start %s: %v\n", sv.spec.Name, sv.spec.Path, err)
		evs := []Event{{Name: sv.spec.Name, Kind: "start-failed", Status: err.Error()}}
		return append(evs, s.afterExitLocked(sv, true)...)
	}
	sv.pid, sv.start, sv.exited = pid, time.Now(), make(chan struct{})
	s.byPID[pid] = sv
	s.printf("initd: service %s started (pid %d, uid %d, gid %d)\n", sv.spec.Name, pid, sv.spec.UID, sv.spec.GID)
	return []Event{{Name: sv.spec.Name, Kind: "started", PID: pid}}
}

func (s *Supervisor) fork(sv *service) (int, error) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, err
	}
	defer devnull.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	argv := append([]string{sv.spec.Path}, sv.spec.Args...)
	dir := sv.spec.Dir
	if dir == "" {
		dir = "/"
	}
	groups := sv.spec.Groups
	if groups == nil {
		groups = []uint32{}
	}
	// Only these three descriptors reach the child: Go opens everything
	// close-on-exec, and descriptors inherited from our own parent are
	// marked close-on-exec here.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		w.Close()
		r.Close()
		return 0, fmt.Errorf("mark descriptors close-on-exec: %w", err)
	}
	pid, err := syscall.ForkExec(sv.spec.Path, argv, &syscall.ProcAttr{
		Dir:   dir,
		Env:   sv.spec.Env,
		Files: []uintptr{devnull.Fd(), w.Fd(), w.Fd()},
		Sys: &syscall.SysProcAttr{
			Setsid:     true, // own session and process group, no controlling tty
			Credential: &syscall.Credential{Uid: sv.spec.UID, Gid: sv.spec.GID, Groups: groups},
		},
	})
	w.Close()
	if err != nil {
		r.Close()
		return 0, err
	}
	go s.copyLines(sv.spec.Name, r)
	return pid, nil
}

// copyLines prefixes each output line with "[name] ".
func (s *Supervisor) copyLines(name string, r *os.File) {
	defer r.Close()
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if line[len(line)-1] != '\n' {
				// Overlong line or final line without newline.
				line = append(append([]byte(nil), line...), '\n')
			}
			s.out.Lock()
			fmt.Fprintf(s.Console, "[%s] %s", name, line)
			s.out.Unlock()
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}

func (s *Supervisor) printf(format string, a ...any) {
	s.out.Lock()
	fmt.Fprintf(s.Console, format, a...)
	s.out.Unlock()
}

func (s *Supervisor) emit(evs ...Event) {
	if s.Notify == nil {
		return
	}
	for _, e := range evs {
		s.Notify(e)
	}
}

func (s *Supervisor) reapLoop(sigc chan os.Signal) {
	defer close(s.loopDone)
	defer signal.Stop(sigc)
	tick := time.NewTicker(time.Second) // in case a SIGCHLD is coalesced away
	defer tick.Stop()
	for {
		select {
		case <-sigc:
		case <-tick.C:
		case <-s.quit:
			s.reap()
			return
		}
		s.reap()
	}
}

// reap collects every exited child. Holding mu across Wait4 means a child
// that exits right after fork is found in byPID.
func (s *Supervisor) reap() {
	var evs []Event
	s.mu.Lock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			break
		}
		status := describe(ws)
		sv, ok := s.byPID[pid]
		if !ok {
			if s.Orphan != nil {
				s.Orphan(pid, status)
			}
			continue
		}
		delete(s.byPID, pid)
		sv.pid = 0
		close(sv.exited)
		evs = append(evs, Event{Name: sv.spec.Name, Kind: "exited", PID: pid, Status: status})
		s.printf("initd: service %s (pid %d) %s\n", sv.spec.Name, pid, status)
		failed := !(ws.Exited() && ws.ExitStatus() == 0)
		if time.Since(sv.start) >= s.ResetAfter {
			sv.backoff = s.MinBackoff
		}
		evs = append(evs, s.afterExitLocked(sv, failed)...)
	}
	s.mu.Unlock()
	s.emit(evs...)
}

// afterExitLocked schedules a restart if the policy asks for one.
func (s *Supervisor) afterExitLocked(sv *service, failed bool) []Event {
	if s.stopping {
		return nil
	}
	restart := sv.spec.Restart == Always || (sv.spec.Restart == OnFailure && failed)
	if !restart {
		s.printf("initd: service %s will not be restarted (restart=%s)\n", sv.spec.Name, sv.spec.Restart)
		return nil
	}
	delay := sv.backoff
	sv.backoff *= 2
	if sv.backoff > s.MaxBackoff {
		sv.backoff = s.MaxBackoff
	}
	s.printf("initd: restarting service %s in %v\n", sv.spec.Name, delay)
	sv.timer = time.AfterFunc(delay, func() {
		s.mu.Lock()
		sv.timer = nil
		ev := s.spawnLocked(sv)
		s.mu.Unlock()
		s.emit(ev...)
	})
	return []Event{{Name: sv.spec.Name, Kind: "restart-scheduled", Delay: delay}}
}

func describe(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exited with status %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Sprintf("killed by signal %v", ws.Signal())
	default:
		return fmt.Sprintf("changed state (%#x)", uint32(ws))
	}
}

// Stop stops every service in reverse start order: SIGTERM to its process
// group, then SIGKILL after StopTimeout. It returns when all are reaped (or
// abandoned after a further StopTimeout) and reaping has ended.
func (s *Supervisor) Stop() {
	s.mu.Lock()
	if !s.started || s.stopping {
		s.mu.Unlock()
		return
	}
	s.stopping = true
	order := append([]*service(nil), s.order...)
	for _, sv := range order {
		if sv.timer != nil {
			sv.timer.Stop()
			sv.timer = nil
		}
	}
	s.mu.Unlock()

	for i := len(order) - 1; i >= 0; i-- {
		sv := order[i]
		s.mu.Lock()
		pid, exited := sv.pid, sv.exited
		s.mu.Unlock()
		if pid == 0 {
			continue
		}
		s.printf("initd: stopping service %s (pid %d)\n", sv.spec.Name, pid)
		unix.Kill(-pid, unix.SIGTERM)
		select {
		case <-exited:
		case <-time.After(s.StopTimeout):
			s.printf("initd: service %s did not stop within %v, killing it\n", sv.spec.Name, s.StopTimeout)
			unix.Kill(-pid, unix.SIGKILL)
			select {
			case <-exited:
			case <-time.After(s.StopTimeout):
				s.printf("initd: service %s (pid %d) could not be reaped\n", sv.spec.Name, pid)
			}
		}
		// Leftover members of the service's process group go too.
		unix.Kill(-pid, unix.SIGKILL)
		s.emit(Event{Name: sv.spec.Name, Kind: "stopped", PID: pid})
	}
	close(s.quit)
	<-s.loopDone
	// Stragglers killed above die asynchronously; reap them too.
	deadline := time.Now().Add(s.StopTimeout)
	for time.Now().Before(deadline) {
		s.reap()
		if _, err := unix.Wait4(-1, nil, unix.WNOHANG, nil); err == unix.ECHILD {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Signal sends sig to the running process of the named service. It reports
// whether the service had a running process.
func (s *Supervisor) Signal(name string, sig unix.Signal) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sv := range s.order {
		if sv.spec.Name != name {
			continue
		}
		if sv.pid <= 0 {
			return 0, fmt.Errorf("service %s is not running", name)
		}
		return sv.pid, unix.Kill(sv.pid, sig)
	}
	return 0, fmt.Errorf("no service %s", name)
}
