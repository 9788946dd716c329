package quoted

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	tdxtest "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/verify"

	"github.com/google/go-eventlog/tcg"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/ccel"
	"github.com/tdforge/tdforge/internal/tdx/kbs"
	"github.com/tdforge/tdforge/internal/tdx/quote"
	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/internal/testutil/tsmtest"
)

// childEnv makes the test binary act as the unprivileged agent (see
// TestMain): it asks the socket for a quote and tries to read the
// simulator's state directly.
const childEnv = "TDFORGE_QUOTED_TEST_CHILD"

func TestMain(m *testing.M) {
	if sock := os.Getenv(childEnv); sock != "" {
		os.Exit(child(sock, os.Getenv(childEnv+"_SIMDIR")))
	}
	os.Exit(m.Run())
}

// child is the agent's side, run under another uid: it prints the
// outcome of a direct read of the simulator PKI and of a quote through the
// socket.
func child(sock, simDir string) int {
	if _, err := os.ReadFile(filepath.Join(simDir, sim.PKIFile)); err != nil {
		fmt.Printf("direct read: %v\n", err)
	} else {
		fmt.Println("direct read: ok")
	}
	c, err := quote.OpenSocket(sock)
	if err != nil {
		fmt.Printf("socket: %v\n", err)
		return 1
	}
	q, err := c.Attest(nonce(0x42), spki(0x42))
	if err != nil {
		fmt.Printf("socket quote: %v\n", err)
		return 1
	}
	got, _ := sim.ReportData(q)
	want, _ := attestation.ReportData(nonce(0x42), spki(0x42))
	fmt.Printf("socket quote: %s %d bytes bound=%v\n", c.Name(), len(q), got == want)
	return 0
}

// serve starts srv on a socket in a fresh directory and returns its path.
func serve(t *testing.T, srv *Server) string {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "quote.sock")
	ln, err := Listen(sock, os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ln.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return sock
}

func rd(b byte) [64]byte {
	var r [64]byte
	for i := range r {
		r[i] = b ^ byte(i)
	}
	return r
}

// nonce and spki are a request's nonce and SPKI hash; bound is the
// REPORTDATA initd forms from them.
func nonce(b byte) []byte {
	n := make([]byte, 32)
	for i := range n {
		n[i] = b + byte(i)
	}
	return n
}

func spki(b byte) [32]byte { return attestation.SPKIHash([]byte{b}) }

func bound(t *testing.T, n []byte, h [32]byte) [64]byte {
	t.Helper()
	r, err := attestation.ReportData(n, h)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// attestVia serves srv and asks it, as the agent does, for a quote bound
// to nonce(n) and spki(n). The client must name backend want and the
// quote's REPORTDATA must be that binding. It returns the socket and quote.
func attestVia(t *testing.T, srv *Server, want string, n byte) (string, []byte) {
	t.Helper()
	sock := serve(t, srv)
	c, err := quote.OpenSocket(sock)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name() != want {
		t.Fatalf("client reports backend %q, want initd's %q", c.Name(), want)
	}
	q, err := c.Attest(nonce(n), spki(n))
	if err != nil {
		t.Fatalf("quote through initd: %v", err)
	}
	if got, _ := sim.ReportData(q); got != bound(t, nonce(n), spki(n)) {
		t.Fatal("REPORTDATA through the socket is not ReportData(nonce, spki) of the request")
	}
	return sock, q
}

func TestSocketServesSimulatorQuotes(t *testing.T) {
	dir, pki := tsmtest.SimState(t)
	p, err := quote.OpenSimulator(dir)
	if err != nil {
		t.Fatal(err)
	}
	sock, q := attestVia(t, &Server{Provider: p, UID: os.Getuid(), Logf: t.Logf}, quote.NameSimulator, 5)
	st, err := os.Stat(sock)
	if err != nil || st.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v (%v), want 0660", st.Mode(), err)
	}
	if err := verify.RawTdxQuote(q, &verify.Options{TrustedRoots: sim.RootPool(pki)}); err != nil {
		t.Fatalf("quote through the socket does not verify: %v", err)
	}
}

// flaky fails its first n Accepts with err, as a process out of file
// descriptors does.
type flaky struct {
	net.Listener
	n   int
	err error
}

func (l *flaky) Accept() (net.Conn, error) {
	if l.n > 0 {
		l.n--
		return nil, l.err
	}
	return l.Listener.Accept()
}

// An Accept error other than a closed listener does not stop the socket
// for the rest of the boot: Serve pauses and accepts again.
func TestSocketSurvivesAcceptErrors(t *testing.T) {
	dir, _ := tsmtest.SimState(t)
	p, err := quote.OpenSimulator(dir)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "quote.sock")
	ln, err := Listen(sock, os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	srv := &Server{Provider: p, UID: os.Getuid(), Logf: func(f string, a ...any) { fmt.Fprintf(&logs, f+"\n", a...) }}
	done := make(chan error, 1)
	go func() {
		done <- srv.Serve(&flaky{Listener: ln, n: 3, err: os.NewSyscallError("accept4", syscall.EMFILE)})
	}()
	quoted := make(chan error, 1)
	go func() {
		c, err := quote.OpenSocket(sock)
		if err == nil {
			_, err = c.Attest(nonce(7), spki(7))
		}
		quoted <- err
	}()
	select {
	case err := <-done:
		ln.Close()
		t.Fatalf("Serve stopped on an Accept error: %v", err)
	case err := <-quoted:
		if err != nil {
			t.Fatalf("quote after EMFILE: %v", err)
		}
	}
	ln.Close()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if strings.Count(logs.String(), "too many open files") != 3 {
		t.Fatalf("logs:\n%s", logs.String())
	}
}

func TestSocketRefusesOtherUIDs(t *testing.T) {
	dir, _ := tsmtest.SimState(t)
	p, _ := quote.OpenSimulator(dir)
	var logged []string
	sock := serve(t, &Server{Provider: p, UID: os.Getuid() + 1, Logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }})
	_, err := quote.OpenSocket(sock)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("uid %d may not quote", os.Getuid())) {
		t.Fatalf("a peer with another uid got an answer: %v", err)
	}
}

func TestSocketReportsMissingBackend(t *testing.T) {
	sock := serve(t, &Server{OpenErr: errors.New("no TDX quote backend: neither ... exists"), UID: os.Getuid()})
	_, err := quote.OpenSocket(sock)
	if err == nil || !strings.Contains(err.Error(), "initd has no quote backend: no TDX quote backend") {
		t.Fatalf("got %v", err)
	}
}

// exchange sends req, raw, on the socket and returns the whole answer.
func exchange(t *testing.T, sock string, req []byte) []byte {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(req)
	c.(*net.UnixConn).CloseWrite()
	b, _ := io.ReadAll(c)
	return b
}

func TestSocketProtocolBounds(t *testing.T) {
	dir, _ := tsmtest.SimState(t)
	p, _ := quote.OpenSimulator(dir)
	sock := serve(t, &Server{Provider: p, UID: os.Getuid()})
	ask := func(req []byte) string { return string(exchange(t, sock, req)) }
	req := func(op byte, nonceLen int, field []byte) []byte {
		b := make([]byte, quote.SocketRequestSize)
		b[0], b[1] = op, byte(nonceLen)
		copy(b[2:], field)
		return b
	}
	for _, c := range []struct {
		req  []byte
		want string
	}{
		{req('X', 0, nil), "unknown request op"},
		{[]byte("Qshort"), "quote request: unexpected EOF"},
		{req('Q', 15, make([]byte, 15)), "nonce must be 16..64 bytes, got 15"},
		{req('Q', 65, nil), "nonce length 65 is over 64"},
		{req('Q', 16, append(make([]byte, 16), 1)), "non-zero bytes after the nonce"},
	} {
		if got := ask(c.req); !strings.Contains(got, c.want) || strings.Contains(got, `"quote"`) {
			t.Fatalf("request %q: got %q, want an error containing %q", c.req, got, c.want)
		}
	}
}

// The agent cannot get a quote over a REPORTDATA it chooses (the key
// broker's binding of a runtime-data, which would let it run initd's
// key-broker exchange itself): whatever it sends, a quote served has
// REPORTDATA = attestation.ReportData(nonce, spki) of the nonce and SPKI
// hash sent. Before the fix the request's 64 bytes were the REPORTDATA.
func TestSocketQuotesOnlyInAgentDomain(t *testing.T) {
	dir, _ := tsmtest.SimState(t)
	p, _ := quote.OpenSimulator(dir)
	sock := serve(t, &Server{Provider: p, UID: os.Getuid(), Logf: t.Logf})
	binding, err := kbs.ReportData(kbs.RuntimeData{Nonce: "broker-challenge", TEEPubKey: kbs.JWK{Kty: "EC", Crv: "P-256", X: "eA", Y: "eQ"}}, "", "sha384")
	if err != nil {
		t.Fatal(err)
	}
	ask := func(req []byte) *quote.SocketResponse {
		b := exchange(t, sock, req)
		var resp quote.SocketResponse
		if len(b) < 4 || json.Unmarshal(b[4:], &resp) != nil {
			t.Fatalf("request %x: unreadable answer %q", req, b)
		}
		return &resp
	}
	size := 1 + 1 + attestation.MaxNonce + 32 // op, nonce length, nonce, SPKI hash
	pad := func(b []byte) []byte { return append(b, make([]byte, size-len(b))...) }
	reqs := [][]byte{
		append([]byte{'Q'}, binding[:]...),                                    // REPORTDATA as the request (the old protocol)
		pad(append([]byte{'Q'}, binding[:]...)),                               // ... padded to the request size
		pad(append([]byte{'Q', 64}, binding[:]...)),                           // the binding as the nonce
		pad(append([]byte{'Q', 48}, binding[:48]...)),                         // its hash as the nonce
		append(append([]byte{'Q', 32}, make([]byte, 64)...), binding[:32]...), // ... as the SPKI hash
	}
	served := 0
	for _, req := range reqs {
		resp := ask(req)
		if resp.Quote == nil {
			continue
		}
		served++
		got, err := sim.ReportData(resp.Quote)
		if err != nil {
			t.Fatal(err)
		}
		if got == binding {
			t.Fatalf("request %x: the socket quoted over the key broker's binding", req)
		}
		var h [32]byte
		copy(h[:], req[2+attestation.MaxNonce:])
		if want := bound(t, req[2:2+int(req[1])], h); got != want {
			t.Fatalf("request %x: REPORTDATA %x, want ReportData(nonce, spki) %x", req, got, want)
		}
	}
	if served != 3 {
		t.Fatalf("%d of the well-formed requests were quoted, want 3", served)
	}
}

// A client refuses an oversized response before reading it.
func TestClientBoundsResponse(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.ReadFull(c, make([]byte, quote.SocketRequestSize))
		c.Write([]byte{0xff, 0xff, 0xff, 0xff})
	}()
	if _, err := quote.OpenSocket(sock); err == nil || !strings.Contains(err.Error(), "outside 1..") {
		t.Fatalf("got %v", err)
	}
}

// rootOnly is go-configfs-tsm's fake configfs as Linux permissions make
// it: /sys/kernel/config/tsm/report is root's, so a caller whose uid is
// not 0 cannot create, write or read a report entry.
type rootOnly struct {
	configfsi.Client
	uid int
}

func (r rootOnly) check(op, path string) error {
	if r.uid != 0 {
		return &fs.PathError{Op: op, Path: path, Err: syscall.EACCES}
	}
	return nil
}

func (r rootOnly) MkdirTemp(dir, pattern string) (string, error) {
	if err := r.check("mkdir", dir); err != nil {
		return "", err
	}
	return r.Client.MkdirTemp(dir, pattern)
}

func (r rootOnly) ReadFile(name string) ([]byte, error) {
	if err := r.check("open", name); err != nil {
		return nil, err
	}
	return r.Client.ReadFile(name)
}

func (r rootOnly) WriteFile(name string, b []byte) error {
	if err := r.check("open", name); err != nil {
		return err
	}
	return r.Client.WriteFile(name, b)
}

// The hardware path: configfs-tsm is root-only, so the agent's uid cannot
// quote directly, while initd (root) quotes for it through the socket and
// the agent learns the backend's real name.
func TestHardwareConfigfsTSMThroughInitd(t *testing.T) {
	tsm := tsmtest.Report(t, quote.TSMProviderTDX)
	direct := &quote.ConfigfsTSM{Client: rootOnly{tsm, 1000}}
	// go-configfs-tsm flattens the error: match its text.
	if _, err := direct.Quote(rd(1)); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("an unprivileged direct configfs-tsm quote: got %v, want permission denied", err)
	}
	initd := &quote.ConfigfsTSM{Client: rootOnly{tsm, 0}}
	attestVia(t, &Server{Provider: initd, UID: os.Getuid()}, quote.NameConfigfsTSM, 2)
}

// The tdx_guest device path (go-tdx-guest's test device) is served the
// same way, and named as such.
func TestHardwareTDXGuestDeviceThroughInitd(t *testing.T) {
	dir, _ := tsmtest.SimState(t)
	s, err := sim.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := bound(t, nonce(9), spki(9))
	q, _ := s.Quote(want)
	dev, err := tdxtest.TcDevice([]tdxtest.TestCase{{Name: "device", Input: want, Quote: q}})
	if err != nil {
		t.Fatal(err)
	}
	if _, got := attestVia(t, &Server{Provider: &quote.TDXGuestDevice{Source: dev}, UID: os.Getuid()}, quote.NameTDXDevice, 9); !bytes.Equal(got, q) {
		t.Fatal("the device's quote did not come through initd unchanged")
	}
}

// With real uids (the test runs as root): an unprivileged process cannot
// read the root-only simulator state, yet gets its quote through the
// socket; root itself is refused because it is not the agent's uid.
func TestUnprivilegedAgentProcess(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a child under another uid")
	}
	const agentUID = 4242
	simDir, _ := tsmtest.SimState(t)
	p, err := quote.OpenSimulator(simDir)
	if err != nil {
		t.Fatal(err)
	}
	sock := serve(t, &Server{Provider: p, UID: agentUID, Logf: t.Logf})
	// The socket's group is the agent's in the guest; here the child
	// joins the test's group, and the socket directory must be traversable.
	os.Chmod(filepath.Dir(sock), 0o755)
	bin := filepath.Join(t.TempDir(), "child")
	os.Chmod(filepath.Dir(bin), 0o755)
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	// Every directory above the socket and the binary must be traversable
	// by the child's uid.
	// The simulator state's parents are opened too, so only its own 0700
	// directory and 0600 files keep the child out.
	for _, d := range []string{filepath.Dir(filepath.Dir(sock)), filepath.Dir(filepath.Dir(bin)), filepath.Dir(simDir), filepath.Dir(filepath.Dir(simDir))} {
		os.Chmod(d, 0o755)
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{childEnv + "=" + sock, childEnv + "_SIMDIR=" + simDir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: agentUID, Gid: uint32(os.Getgid())}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("agent-uid child: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("direct read: open "+filepath.Join(simDir, sim.PKIFile)+": permission denied")) {
		t.Errorf("the agent's uid could read the simulator's keys:\n%s", out)
	}
	if !bytes.Contains(out, []byte("socket quote: simulator ")) || !bytes.HasSuffix(bytes.TrimSpace(out), []byte(" bound=true")) {
		t.Errorf("the agent's uid got no quote through initd:\n%s", out)
	}
	if _, err := quote.OpenSocket(sock); err == nil || !strings.Contains(err.Error(), "uid 0 may not quote") {
		t.Fatalf("root (not the agent's uid) got an answer: %v", err)
	}
}

func TestPublishCCELFromACPI(t *testing.T) {
	acpi := t.TempDir()
	os.MkdirAll(filepath.Join(acpi, "data"), 0o755)
	// Linux publishes ACPI tables root-only.
	os.WriteFile(filepath.Join(acpi, "CCEL"), []byte("table"), 0o400)
	os.WriteFile(filepath.Join(acpi, "data", "CCEL"), []byte("log"), 0o400)
	out := filepath.Join(t.TempDir(), "acpi")
	os.MkdirAll(out, 0o755)
	os.WriteFile(filepath.Join(out, AbsentFile), []byte("stale"), 0o644)
	gid := os.Getgid()
	c, err := PublishCCEL(out, gid, ACPISource(filepath.Join(t.TempDir(), "none")), ACPISource(acpi))
	if err != nil || c.Absent != "" || string(c.Table) != "table" || string(c.Log) != "log" {
		t.Fatalf("PublishCCEL: %+v %v", c, err)
	}
	for name, want := range map[string]string{"CCEL": "table", "data/CCEL": "log"} {
		p := filepath.Join(out, name)
		b, err := os.ReadFile(p)
		st, _ := os.Stat(p)
		if err != nil || string(b) != want || st.Mode().Perm() != 0o640 || int(st.Sys().(*syscall.Stat_t).Gid) != gid {
			t.Fatalf("%s: %q %v mode %v", name, b, err, st.Mode())
		}
	}
	if _, err := os.Stat(filepath.Join(out, AbsentFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("a stale absence reason survived")
	}
}

func TestPublishCCELAbsent(t *testing.T) {
	acpi := t.TempDir()
	out := filepath.Join(t.TempDir(), "acpi")
	c, err := PublishCCEL(out, os.Getgid(), ACPISource(acpi))
	if err != nil {
		t.Fatal(err)
	}
	want := "no CCEL ACPI table: " + filepath.Join(acpi, "CCEL") + " does not exist (the firmware did not publish its event log)"
	if c.Absent != want || c.Table != nil || c.Log != nil {
		t.Fatalf("reason %q, want %q (table %d bytes)", c.Absent, want, len(c.Table))
	}
	if b, _ := os.ReadFile(filepath.Join(out, AbsentFile)); string(b) != want+"\n" {
		t.Fatalf("%s holds %q", AbsentFile, b)
	}
	// Half an event log is an error, not an absence.
	os.WriteFile(filepath.Join(acpi, "CCEL"), []byte("table"), 0o400)
	if _, err := PublishCCEL(out, os.Getgid(), ACPISource(acpi)); err == nil || !strings.Contains(err.Error(), "its event log is not") {
		t.Fatalf("table without log: %v", err)
	}
}

// The published log holds the events only, not the log area's padding.
func TestPublishCCELTrimsPadding(t *testing.T) {
	d := register.Value{1}
	table, log, err := ccel.Encode([]ccel.Event{{Register: register.RTMR1, Type: tcg.EFIAction, Digest: &d, Data: []byte("Calling EFI Application from Boot Option")}})
	if err != nil {
		t.Fatal(err)
	}
	acpi := t.TempDir()
	os.MkdirAll(filepath.Join(acpi, "data"), 0o755)
	os.WriteFile(filepath.Join(acpi, "CCEL"), table, 0o400)
	os.WriteFile(filepath.Join(acpi, "data", "CCEL"), log, 0o400)
	out := filepath.Join(t.TempDir(), "acpi")
	c, err := PublishCCEL(out, os.Getgid(), ACPISource(acpi))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(out, "data", "CCEL"))
	if err != nil || !bytes.Equal(c.Log, got) {
		t.Fatalf("returned a %d-byte log, wrote %d: %v", len(c.Log), len(got), err)
	}
	if len(got) >= len(log)/8 || !bytes.Equal(got, log[:len(got)]) {
		t.Fatalf("published %d of the area's %d bytes", len(got), len(log))
	}
	if evs, _, err := ccel.Parse(got); err != nil || len(evs) != 1 {
		t.Fatalf("published log: %d events, %v", len(evs), err)
	}
}
