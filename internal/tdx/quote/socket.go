// The quoting socket: initd (root) owns the quote backend and serves it to
// the agent's uid over a unix socket (initd/quoted), because configfs-tsm
// report entries and /dev/tdx_guest are root-only. This file is the wire
// protocol and the agent's client Provider; it is the same in simulation
// and on hardware.
//
// Protocol, one exchange per connection:
//
//	request:  1 byte op ('Q' quote, 'N' backend name) || 64 bytes REPORTDATA
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

// SocketRequestSize is the fixed size of a request: op and REPORTDATA.
const SocketRequestSize = 1 + 64

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

// ReadSocketRequest reads one fixed-size request.
func ReadSocketRequest(r io.Reader) (op byte, reportData [64]byte, err error) {
	var b [SocketRequestSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, reportData, fmt.Errorf("quote request: %w", err)
	}
	copy(reportData[:], b[1:])
	return b[0], reportData, nil
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

// SocketClient is the agent's Provider: it asks initd's quoting socket.
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
	resp, err := c.exchange(OpName, [64]byte{})
	if err != nil {
		return nil, err
	}
	c.name = resp.Provider
	return c, nil
}

// Name implements Provider: the backend initd reported.
func (c *SocketClient) Name() string { return c.name }

// Quote implements Provider.
func (c *SocketClient) Quote(reportData [64]byte) ([]byte, error) {
	resp, err := c.exchange(OpQuote, reportData)
	if err != nil {
		return nil, err
	}
	if resp.Provider != c.name {
		return nil, fmt.Errorf("initd's quoting socket %s switched backend from %q to %q", c.path, c.name, resp.Provider)
	}
	return checkQuote(resp.Quote, reportData)
}

func (c *SocketClient) exchange(op byte, reportData [64]byte) (*SocketResponse, error) {
	conn, err := net.DialTimeout("unix", c.path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("initd's quoting socket %s: %w (initd serves it before starting services; is this a tdforge guest?)", c.path, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(SocketTimeout))
	// initd answers a refused peer before reading its request, so a
	// failed write may still leave the answer to read.
	_, werr := conn.Write(append([]byte{op}, reportData[:]...))
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
