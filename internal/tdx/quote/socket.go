// The quoting socket: initd (root) owns the quote backend and serves it to
// the agent's uid over a unix socket (initd/quoted), because configfs-tsm
// report entries and /dev/tdx_guest are root-only. This file is the wire
// protocol and the agent's client Provider; it is the same in simulation
// and on hardware.
//
// The agent cannot choose REPORTDATA: it sends a nonce and its TLS SPKI
// hash, and initd quotes over attestation.ReportData(nonce, spkiHash), so
// every quote the socket serves is in the agent's domain
// ("tdforge/v1/attest") and none can stand for another binding (the key
// broker's runtime-data hash, for one, which only initd itself quotes).
//
// Protocol, one exchange per connection:
//
//	request:  1 byte op ('Q' quote, 'N' backend name) || 1 byte nonce
//	          length n || 64 bytes nonce (n bytes, then zeros) || 32 bytes
//	          SPKI hash; for 'Q', attestation.MinNonce <= n <= MaxNonce,
//	          for 'N' all zero
//	response: 4-byte big-endian length n (1 <= n <= MaxSocketResponse) ||
//	          n bytes of JSON SocketResponse

package quote

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
)

// What initd publishes for the agent in the guest: the quoting socket, and
// the firmware's CCEL (the kernel's ACPI tables are root-only) in the ACPI
// layout (CCEL, data/CCEL) or, when there is none, CCELAbsentFile saying why.
const (
	DefaultSocket  = "/run/tdforge/quote.sock"
	CCELDir        = "/run/tdforge/acpi"
	CCELAbsentFile = "CCEL.absent"
)

// Socket request operations.
const (
	OpQuote byte = 'Q'
	OpName  byte = 'N'
)

// SocketRequestSize is the fixed size of a request: op, nonce length,
// nonce field and SPKI hash.
const SocketRequestSize = 1 + 1 + attestation.MaxNonce + 32

// SocketRequest is one request: an op and, for OpQuote, the nonce and SPKI
// hash that initd binds into REPORTDATA.
type SocketRequest struct {
	Op       byte
	Nonce    []byte
	SPKIHash [32]byte
}

// Attester quotes in the agent's domain: the quote's REPORTDATA is
// attestation.ReportData(nonce, spkiHash). The agent's SocketClient is
// one; DomainAttester is one in-process.
type Attester interface {
	Name() string
	Attest(nonce []byte, spkiHash [32]byte) ([]byte, error)
}

// DomainAttester is an in-process Attester over a backend: initd's socket
// serves it, and tests use it in place of the socket.
type DomainAttester struct{ Provider Provider }

// Name implements Attester.
func (d DomainAttester) Name() string { return d.Provider.Name() }

// Attest implements Attester.
func (d DomainAttester) Attest(nonce []byte, spkiHash [32]byte) ([]byte, error) {
	rd, err := attestation.ReportData(nonce, spkiHash)
	if err != nil {
		return nil, err
	}
	return d.Provider.Quote(rd)
}

// MaxSocketResponse bounds a response. A TDX quote with its PCK chain is a
// few KiB; the bound leaves room for larger certification data.
const MaxSocketResponse = 1 << 20

// SocketTimeout bounds one exchange on either side. A hardware quote goes
// through the host's quoting service and may take seconds.
const SocketTimeout = 60 * time.Second

// SocketResponse is the JSON answer to one request.
type SocketResponse struct {
	// Provider is the backend initd quotes with (NameConfigfsTSM,
	// NameTDXDevice or NameSimulator).
	Provider string `json:"provider,omitempty"`
	// Quote is the quote for an OpQuote request.
	Quote []byte `json:"quote,omitempty"`
	// Error says why the request failed; empty on success.
	Error string `json:"error,omitempty"`
}

// ReadSocketRequest reads one fixed-size request. It refuses a nonce
// length over attestation.MaxNonce and non-zero padding; the op and the
// nonce's lower bound are the server's to check.
func ReadSocketRequest(r io.Reader) (*SocketRequest, error) {
	var b [SocketRequestSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return nil, fmt.Errorf("quote request: %w", err)
	}
	n := int(b[1])
	if n > attestation.MaxNonce {
		return nil, fmt.Errorf("quote request: nonce length %d is over %d", n, attestation.MaxNonce)
	}
	field := b[2 : 2+attestation.MaxNonce]
	for _, c := range field[n:] {
		if c != 0 {
			return nil, errors.New("quote request: non-zero bytes after the nonce")
		}
	}
	req := &SocketRequest{Op: b[0], Nonce: append([]byte(nil), field[:n]...)}
	copy(req.SPKIHash[:], b[2+attestation.MaxNonce:])
	return req, nil
}

// marshal encodes the request; the nonce must be at most MaxNonce bytes.
func (q *SocketRequest) marshal() ([]byte, error) {
	if len(q.Nonce) > attestation.MaxNonce {
		return nil, fmt.Errorf("nonce must be %d..%d bytes, got %d", attestation.MinNonce, attestation.MaxNonce, len(q.Nonce))
	}
	b := make([]byte, SocketRequestSize)
	b[0], b[1] = q.Op, byte(len(q.Nonce))
	copy(b[2:], q.Nonce)
	copy(b[2+attestation.MaxNonce:], q.SPKIHash[:])
	return b, nil
}

// WriteSocketResponse writes one length-prefixed response.
func WriteSocketResponse(w io.Writer, resp *SocketResponse) error {
	b, err := json.Marshal(resp)
	if err != nil {
		return err
	}
	if len(b) > MaxSocketResponse {
		return fmt.Errorf("quote response is %d bytes, over the %d-byte limit", len(b), MaxSocketResponse)
	}
	out := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(b)), uint32(len(b)))
	_, err = w.Write(append(out, b...))
	return err
}

// readSocketResponse reads one length-prefixed response, refusing
// oversized ones before reading them.
func readSocketResponse(r io.Reader) (*SocketResponse, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxSocketResponse {
		return nil, fmt.Errorf("response length %d is outside 1..%d", n, MaxSocketResponse)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	var resp SocketResponse
	if err := json.Unmarshal(b, &resp); err != nil {
		return nil, fmt.Errorf("response is not JSON: %w", err)
	}
	return &resp, nil
}

// SocketClient is the agent's Attester: it asks initd's quoting socket.
// Name reports the backend initd quotes with, so QuoteProvider stays
// truthful.
type SocketClient struct {
	path string
	name string
}

// OpenSocket connects to initd's quoting socket at path and asks which
// backend it uses.
func OpenSocket(path string) (*SocketClient, error) {
	c := &SocketClient{path: path}
	resp, err := c.exchange(&SocketRequest{Op: OpName})
	if err != nil {
		return nil, err
	}
	c.name = resp.Provider
	return c, nil
}

// Name implements Attester: the backend initd reported.
func (c *SocketClient) Name() string { return c.name }

// Attest implements Attester: initd quotes over
// attestation.ReportData(nonce, spkiHash).
func (c *SocketClient) Attest(nonce []byte, spkiHash [32]byte) ([]byte, error) {
	reportData, err := attestation.ReportData(nonce, spkiHash)
	if err != nil {
		return nil, err
	}
	resp, err := c.exchange(&SocketRequest{Op: OpQuote, Nonce: nonce, SPKIHash: spkiHash})
	if err != nil {
		return nil, err
	}
	if resp.Provider != c.name {
		return nil, fmt.Errorf("initd's quoting socket %s switched backend from %q to %q", c.path, c.name, resp.Provider)
	}
	return checkQuote(resp.Quote, reportData)
}

func (c *SocketClient) exchange(req *SocketRequest) (*SocketResponse, error) {
	b, err := req.marshal()
	if err != nil {
		return nil, err
	}
	conn, err := net.DialTimeout("unix", c.path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("initd's quoting socket %s: %w (initd serves it before starting services; is this a tdforge guest?)", c.path, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(SocketTimeout))
	// initd answers a refused peer before reading its request, so a
	// failed write may still leave the answer to read.
	_, werr := conn.Write(b)
	resp, err := readSocketResponse(conn)
	if err != nil {
		if werr != nil {
			err = werr
		}
		return nil, fmt.Errorf("initd's quoting socket %s: %w", c.path, err)
	}
	if resp.Error != "" {
		return nil, fmt.Errorf("initd's quoting socket %s: %w", c.path, errors.New(resp.Error))
	}
	if resp.Provider == "" {
		return nil, fmt.Errorf("initd's quoting socket %s did not name its quote backend", c.path)
	}
	return resp, nil
}
