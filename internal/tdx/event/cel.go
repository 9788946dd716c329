package event

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/go-eventlog/cel"
	evreg "github.com/google/go-eventlog/register"

	"github.com/tdforge/tdforge/internal/tdx/register"
)

// CELContentType is the CEL content TLV type tdforge uses for its events.
// Values 0x80..0xFF are unassigned by the TCG CEL spec; 0xE0 is ours.
const CELContentType uint8 = 0xE0

// celContent adapts Event to cel.Content.
type celContent struct{ e Event }

func (c celContent) TLV() (cel.TLV, error) {
	enc, err := c.e.Encode()
	if err != nil {
		return cel.TLV{}, err
	}
	return cel.TLV{Type: CELContentType, Value: enc}, nil
}

func (c celContent) GenerateDigest(h crypto.Hash) ([]byte, error) {
	if h != crypto.SHA384 {
		return nil, fmt.Errorf("runtime events are measured with SHA-384, not %v", h)
	}
	m, err := c.e.Measurement()
	if err != nil {
		return nil, err
	}
	return m[:], nil
}

// Log is the runtime event log: a TCG Canonical Event Log of CC measurement
// register records for RTMR3.
type Log struct {
	cel    cel.CEL
	events []Event
}

// NewLog returns an empty runtime log.
func NewLog() *Log { return &Log{cel: cel.NewConfComputeMR()} }

// Append measures e, calls extend with its SHA-384 measurement (the caller
// extends RTMR3), and on success records it in the log.
func (l *Log) Append(e Event, extend func(measurement [48]byte) error) error {
	return l.cel.AppendEvent(celContent{e}, []crypto.Hash{crypto.SHA384}, int(register.RTMR3.CCMRIndex()),
		func(_ crypto.Hash, _ int, d []byte) error {
			var m [48]byte
			copy(m[:], d)
			if extend == nil {
				return nil
			}
			return extend(m)
		})
}

// Events returns the decoded events in log order.
func (l *Log) Events() []Event {
	out := make([]Event, 0, len(l.cel.Records()))
	for _, r := range l.cel.Records() {
		e, err := Decode(r.Content.Value)
		if err == nil {
			out = append(out, e)
		}
	}
	return out
}

// MarshalBinary encodes the log as CEL TLV bytes.
func (l *Log) MarshalBinary() ([]byte, error) {
	var b bytes.Buffer
	if err := l.cel.EncodeCEL(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// ParseLog decodes CEL bytes and checks every record: CC MR type, RTMR3
// index, a tdforge content TLV that decodes canonically, and a SHA-384
// digest equal to the content's measurement. An empty input is an empty log.
func ParseLog(raw []byte) (*Log, error) {
	if len(raw) == 0 {
		return NewLog(), nil
	}
	if err := checkTLVBounds(raw); err != nil {
		return nil, fmt.Errorf("runtime event log: not a canonical event log: %w", err)
	}
	c, err := cel.DecodeToCEL(bytes.NewBuffer(append([]byte(nil), raw...)))
	if err != nil {
		return nil, fmt.Errorf("runtime event log: not a canonical event log: %w", err)
	}
	// go-eventlog v0.0.2 sets the log's register type only when it holds more
	// than one record, so check each record's own index type.
	for i, r := range c.Records() {
		if r.IndexType != uint8(cel.CCMRType) {
			return nil, fmt.Errorf("runtime event log: record %d has register type %d, want CC measurement registers (%d)", i, r.IndexType, cel.CCMRType)
		}
	}
	for i, r := range c.Records() {
		if uint32(r.Index) != register.RTMR3.CCMRIndex() {
			return nil, fmt.Errorf("runtime event log: record %d targets CC MR %d, want %d (RTMR3)", i, r.Index, register.RTMR3.CCMRIndex())
		}
		if r.Content.Type != CELContentType {
			return nil, fmt.Errorf("runtime event log: record %d has content type %d, want %d", i, r.Content.Type, CELContentType)
		}
		e, err := Decode(r.Content.Value)
		if err != nil {
			return nil, fmt.Errorf("runtime event log: record %d: %w", i, err)
		}
		if err := cel.VerifyDigests(celContent{e}, r.Digests); err != nil {
			return nil, fmt.Errorf("runtime event log: record %d (%s): %w", i, e.Label(), err)
		}
		if len(r.Digests[crypto.SHA384]) != 48 {
			return nil, fmt.Errorf("runtime event log: record %d (%s) has no SHA-384 digest", i, e.Label())
		}
	}
	return &Log{cel: c}, nil
}

// Replay checks the log against an RTMR3 value using go-eventlog's replay.
func (l *Log) Replay(rtmr3 []byte) error {
	if len(l.cel.Records()) == 0 {
		if bytes.Equal(rtmr3, make([]byte, 48)) {
			return nil
		}
		return errors.New("runtime event log is empty but RTMR3 is not zero")
	}
	return l.cel.Replay(evreg.RTMRBank{RTMRs: []evreg.RTMR{{Index: register.RTMR3.RTMRIndex(), Digest: rtmr3}}})
}

// Value returns the RTMR3 value the log replays to.
func (l *Log) Value() [48]byte {
	var reg [48]byte
	for _, r := range l.cel.Records() {
		var d [48]byte
		copy(d[:], r.Digests[crypto.SHA384])
		reg = Extend(reg, d)
	}
	return reg
}

// JSONEvent is the human rendering of one runtime event.
type JSONEvent struct {
	Index       int    `json:"index"`
	Register    string `json:"register"`
	Type        string `json:"type"`
	Description string `json:"description"`
	Kind        string `json:"kind"`
	Name        string `json:"name"`
	Content     string `json:"content"`      // alg:hex content digest / root hash
	Digest      string `json:"digest"`       // SHA-384 extended into RTMR3, hex
	EncodedData string `json:"encoded_data"` // canonical encoding, hex
}

// JSONEvents renders events for people and for reference values.
func JSONEvents(events []Event) ([]JSONEvent, error) {
	out := make([]JSONEvent, 0, len(events))
	for i, e := range events {
		m, err := e.Measurement()
		if err != nil {
			return nil, err
		}
		enc, _ := e.Encode()
		out = append(out, JSONEvent{
			Index: i, Register: register.RTMR3.Key(), Type: TypeRuntime,
			Description: e.Label(), Kind: e.Kind, Name: e.Name,
			Content: e.DigestString(), Digest: hex.EncodeToString(m[:]),
			EncodedData: hex.EncodeToString(enc),
		})
	}
	return out, nil
}

// MarshalJSON renders the log as a JSON array of JSONEvent.
func (l *Log) MarshalJSON() ([]byte, error) {
	j, err := JSONEvents(l.Events())
	if err != nil {
		return nil, err
	}
	return json.Marshal(j)
}

// checkTLVBounds walks the top-level TLVs (u8 type, u32 big-endian length,
// value) and refuses a length past the end of the input, before go-eventlog
// allocates whatever length the (untrusted) log declares.
func checkTLVBounds(raw []byte) error {
	for off := 0; off < len(raw); {
		if len(raw)-off < 5 {
			return fmt.Errorf("truncated TLV header at offset %d", off)
		}
		n := int(binary.BigEndian.Uint32(raw[off+1 : off+5]))
		if n > len(raw)-off-5 {
			return fmt.Errorf("TLV at offset %d declares %d bytes, only %d remain", off, n, len(raw)-off-5)
		}
		// A digests field (type 3) holds nested TLVs that go-eventlog
		// decodes the same way.
		if raw[off] == 3 {
			if err := checkTLVBounds(raw[off+5 : off+5+n]); err != nil {
				return fmt.Errorf("digests at offset %d: %w", off, err)
			}
		}
		off += 5 + n
	}
	return nil
}
