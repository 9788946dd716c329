// Package quoted is initd's quoting service, the one privileged quoting
// path of a tdforge guest. configfs-tsm report entries and /dev/tdx_guest
// are root-only, and the simulator's state holds its private keys, so
// initd (root) opens the quote backend (configfs-tsm, the tdx_guest device
// or the simulator: internal/tdx/quote) and serves it over a unix socket to
// exactly one uid, the agent's, checked with SO_PEERCRED. The agent sends a
// nonce and its TLS SPKI hash, never REPORTDATA: initd quotes over
// attestation.ReportData(nonce, spkiHash), so the agent gets quotes only in
// its own domain, never over initd's key-broker binding (initd/unlock
// quotes with the backend directly). The wire protocol
// and the agent's client are internal/tdx/quote's socket.go. The simulator
// and hardware differ only in the backend's kernel call.
//
// It also publishes the firmware's CCEL (root-only 0400 files under
// /sys/firmware/acpi/tables on Linux) where the agent can read it, or the
// reason it is absent (PublishCCEL).
package quoted

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdforge/tdforge/internal/tdx/quote"
)

// MaxConns is how many connections are served at once; more wait in the
// listen backlog. Quotes themselves are taken one at a time.
const MaxConns = 4

// Server answers quote requests from one uid.
type Server struct {
	// Provider is the backend; nil when it could not be opened.
	Provider quote.Provider
	// OpenErr says why there is no Provider; it is every request's answer.
	OpenErr error
	// UID is the only peer uid served (the agent service's uid).
	UID int
	// Logf reports refused peers and failed quotes (initd's console).
	Logf func(format string, a ...any)

	mu sync.Mutex // one quote at a time
}

// Listen creates the socket at path (replacing a stale one), owned
// root:gid (initd being root) with mode 0660 so only the agent's group can connect; Serve
// still checks the peer's uid.
func Listen(path string, gid int) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("quoting socket %s: %w", path, err)
	}
	old := unix.Umask(0o177)
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("quoting socket %s: %w", path, err)
	}
	if err := os.Chown(path, os.Getuid(), gid); err != nil {
		ln.Close()
		return nil, fmt.Errorf("quoting socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("quoting socket %s: %w", path, err)
	}
	return ln, nil
}

// Accept errors other than a closed listener (EMFILE, ECONNABORTED, ...)
// are retried after a pause that doubles from minAcceptBackoff to
// maxAcceptBackoff, as net/http does: the socket must outlive them.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// Serve answers connections on ln until it is closed; it then returns nil.
func (s *Server) Serve(ln net.Listener) error {
	slots := make(chan struct{}, MaxConns)
	var wait time.Duration
	for {
		slots <- struct{}{}
		c, err := ln.Accept()
		if err != nil {
			<-slots
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			wait = min(max(2*wait, minAcceptBackoff), maxAcceptBackoff)
			s.logf("quoting socket: accept: %v (retrying in %v)", err, wait)
			time.Sleep(wait)
			continue
		}
		wait = 0
		go func() {
			defer func() { <-slots }()
			s.handle(c)
		}()
	}
}

func (s *Server) logf(format string, a ...any) {
	if s.Logf != nil {
		s.Logf(format, a...)
	}
}

func (s *Server) handle(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(quote.SocketTimeout))
	uid, err := PeerUID(c)
	if err != nil {
		s.logf("quoting socket: %v", err)
		return
	}
	if uid != s.UID {
		s.logf("quoting socket: refused uid %d (only the agent's uid %d may quote)", uid, s.UID)
		quote.WriteSocketResponse(c, &quote.SocketResponse{Error: fmt.Sprintf("uid %d may not quote: initd serves quotes to the agent's uid only", uid)})
		return
	}
	req, err := quote.ReadSocketRequest(c)
	if err != nil {
		s.logf("quoting socket: %v", err)
		quote.WriteSocketResponse(c, &quote.SocketResponse{Error: err.Error()})
		return
	}
	quote.WriteSocketResponse(c, s.answer(req))
}

func (s *Server) answer(req *quote.SocketRequest) *quote.SocketResponse {
	if s.Provider == nil {
		err := s.OpenErr
		if err == nil {
			err = errors.New("no quote backend")
		}
		return &quote.SocketResponse{Error: "initd has no quote backend: " + err.Error()}
	}
	name := s.Provider.Name()
	switch req.Op {
	case quote.OpName:
		return &quote.SocketResponse{Provider: name}
	case quote.OpQuote:
		// REPORTDATA is always the agent's binding of the request's nonce
		// and SPKI hash: the agent cannot choose it.
		s.mu.Lock()
		q, err := quote.DomainAttester{Provider: s.Provider}.Attest(req.Nonce, req.SPKIHash)
		s.mu.Unlock()
		if err != nil {
			s.logf("quoting socket: %s quote failed: %v", name, err)
			return &quote.SocketResponse{Provider: name, Error: err.Error()}
		}
		return &quote.SocketResponse{Provider: name, Quote: q}
	default:
		return &quote.SocketResponse{Provider: name, Error: fmt.Sprintf("unknown request op %q (want %q or %q)", req.Op, quote.OpQuote, quote.OpName)}
	}
}

// PeerUID returns the uid of a unix socket peer (SO_PEERCRED).
func PeerUID(c net.Conn) (int, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, fmt.Errorf("peer credentials: %T is not a unix socket", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, fmt.Errorf("peer credentials: %w", err)
	}
	if cerr != nil {
		return 0, fmt.Errorf("peer credentials: %w", cerr)
	}
	return int(cred.Uid), nil
}
