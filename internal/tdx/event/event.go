// Package event defines tdforge's canonical RTMR3 runtime event: one
// domain-separated binary encoding shared by the builder (which precomputes
// RTMR3), initd (which extends it at boot) and the verifier (which replays it).
//
// Encoding (version 1), all lengths big-endian u16:
//
//	"tdforge/v1/rtmr3-event\x00" || u8 version
//	|| len(kind) || kind || len(name) || name
//	|| len(alg) || alg || len(digest) || digest
//
// The value extended into RTMR3 is SHA-384 of that encoding.
package event

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tdforge/tdforge/internal/tdx/register"
)

// Domain is the domain-separation prefix of every encoded event.
const Domain = "tdforge/v1/rtmr3-event\x00"

// Version is the encoding version written by this package.
const Version = 1

// TypeRuntime is the event type runtime events carry in logs, reports and
// reference values (beside the TCG types of the firmware events).
const TypeRuntime = "tdforge-runtime-v1"

// Kinds of runtime events.
const (
	// KindPayload: a dm-verity protected payload was set up and mounted.
	// Alg is AlgVerity and Digest the verity root hash.
	KindPayload = "payload"
	// KindPayloadFailed: a payload in the policy could not be set up.
	// Alg and Digest are the policy's expected root hash.
	KindPayloadFailed = "payload-failed"
	// KindPayloadLocked: an encrypted payload whose verity device was set
	// up (and measured by its KindPayload event) stayed locked because the
	// key broker did not release its key. Alg is AlgReason and Digest the
	// reason, e.g. "broker refused: RTMR2 mismatch". Reference values
	// never predict it, so a locked TD fails RTMR3, visibly.
	KindPayloadLocked = "payload-locked"
	// KindVolumeLocked: a sealed volume stayed closed because the key
	// broker did not release its key; KindVolumeFailed: its key was
	// released but the volume did not open (header mismatch, integrity
	// errors). Alg is AlgReason and Digest the reason. A volume that opens
	// is not measured (first boot and later boots would differ), so
	// reference values predict neither and a TD whose volume did not open
	// fails RTMR3, visibly.
	KindVolumeLocked = "volume-locked"
	KindVolumeFailed = "volume-failed"
	// KindConfig: the effective runtime configuration (services, agent,
	// network). Alg is AlgSHA256 over the canonical JSON configuration.
	KindConfig = "config"
)

// Digest algorithms.
const (
	AlgVerity = "verity-sha256" // dm-verity root hash, sha256 tree
	AlgSHA256 = "sha256"
	// AlgReason: Digest is a short UTF-8 text (at most MaxReason bytes, no
	// control characters), measured as it is.
	AlgReason = "reason"
)

// MaxReason bounds an AlgReason text.
const MaxReason = 512

// Event is one RTMR3 runtime event.
type Event struct {
	Version int    `json:"version"`
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Alg     string `json:"alg"`
	Digest  []byte `json:"-"`
}

// Label is the human name of the event, e.g. "payload:model".
func (e Event) Label() string { return e.Kind + ":" + e.Name }

// DigestString renders the content digest as "alg:hex".
func (e Event) DigestString() string {
	if e.Alg == AlgReason {
		return e.Alg + ":" + string(e.Digest)
	}
	return e.Alg + ":" + hex.EncodeToString(e.Digest)
}

func (e Event) String() string { return e.Label() + " " + e.DigestString() }

// Validate reports whether e can be encoded.
func (e Event) Validate() error {
	if e.Version != Version {
		return fmt.Errorf("event %q: unsupported version %d (want %d)", e.Label(), e.Version, Version)
	}
	switch e.Kind {
	case KindPayload, KindPayloadFailed, KindPayloadLocked, KindVolumeLocked, KindVolumeFailed, KindConfig:
	default:
		return fmt.Errorf("event %q: unknown kind %q", e.Label(), e.Kind)
	}
	if e.Name == "" || strings.ContainsAny(e.Name, "\x00\n") {
		return fmt.Errorf("event kind %q: name must be non-empty printable text", e.Kind)
	}
	switch e.Alg {
	case AlgVerity, AlgSHA256:
		if len(e.Digest) != 32 {
			return fmt.Errorf("event %q: %s digest must be 32 bytes, got %d", e.Label(), e.Alg, len(e.Digest))
		}
	case AlgReason:
		if !reasoned(e.Kind) || len(e.Digest) == 0 || len(e.Digest) > MaxReason || !utf8.Valid(e.Digest) ||
			strings.ContainsFunc(string(e.Digest), unicode.IsControl) {
			return fmt.Errorf("event %q: a %s must be 1 to %d bytes of printable UTF-8 on a %s, %s or %s event", e.Label(), e.Alg, MaxReason, KindPayloadLocked, KindVolumeLocked, KindVolumeFailed)
		}
	default:
		return fmt.Errorf("event %q: unknown digest algorithm %q", e.Label(), e.Alg)
	}
	for _, s := range []string{e.Kind, e.Name, e.Alg} {
		if len(s) > 0xffff {
			return fmt.Errorf("event %q: field too long", e.Label())
		}
	}
	return nil
}

// Encode returns the canonical encoding of e.
func (e Event) Encode() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(Domain)
	b.WriteByte(byte(e.Version))
	for _, f := range [][]byte{[]byte(e.Kind), []byte(e.Name), []byte(e.Alg), e.Digest} {
		var l [2]byte
		binary.BigEndian.PutUint16(l[:], uint16(len(f)))
		b.Write(l[:])
		b.Write(f)
	}
	return b.Bytes(), nil
}

// Decode parses a canonical encoding. It rejects trailing bytes.
func Decode(b []byte) (Event, error) {
	if !bytes.HasPrefix(b, []byte(Domain)) {
		return Event{}, errors.New("runtime event: missing tdforge domain prefix")
	}
	b = b[len(Domain):]
	if len(b) < 1 {
		return Event{}, errors.New("runtime event: truncated")
	}
	e := Event{Version: int(b[0])}
	b = b[1:]
	var fields [4][]byte
	for i := range fields {
		if len(b) < 2 {
			return Event{}, errors.New("runtime event: truncated")
		}
		n := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		if len(b) < n {
			return Event{}, errors.New("runtime event: truncated")
		}
		fields[i] = append([]byte(nil), b[:n]...)
		b = b[n:]
	}
	if len(b) != 0 {
		return Event{}, errors.New("runtime event: trailing bytes")
	}
	e.Kind, e.Name, e.Alg, e.Digest = string(fields[0]), string(fields[1]), string(fields[2]), fields[3]
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// Measurement returns SHA-384 of the canonical encoding: the value extended
// into RTMR3.
func (e Event) Measurement() ([48]byte, error) {
	enc, err := e.Encode()
	if err != nil {
		return [48]byte{}, err
	}
	return sha512.Sum384(enc), nil
}

// Extend is register.Extend, the TDX register extend operation.
func Extend(reg [48]byte, digest [48]byte) [48]byte { return register.Extend(reg, digest) }

// Replay returns the RTMR value after extending each event, in order,
// starting from zero.
func Replay(events []Event) ([48]byte, error) {
	var reg [48]byte
	for i, e := range events {
		m, err := e.Measurement()
		if err != nil {
			return reg, fmt.Errorf("event %d: %w", i, err)
		}
		reg = Extend(reg, m)
	}
	return reg, nil
}

// reasoned reports whether events of kind carry an AlgReason.
func reasoned(kind string) bool {
	return kind == KindPayloadLocked || kind == KindVolumeLocked || kind == KindVolumeFailed
}

// Locked returns the payload-locked event of payload name for reason,
// which is cut to MaxReason bytes and stripped of control characters.
func Locked(name, reason string) Event { return Reasoned(KindPayloadLocked, name, reason) }

// Reasoned returns the event of kind (payload-locked, volume-locked or
// volume-failed) for name and reason, cut to MaxReason bytes and stripped
// of control characters.
func Reasoned(kind, name, reason string) Event {
	r := strings.Map(func(c rune) rune {
		if unicode.IsControl(c) {
			return ' '
		}
		return c
	}, strings.ToValidUTF8(reason, "?"))
	for len(r) > MaxReason {
		_, n := utf8.DecodeLastRuneInString(r)
		r = r[:len(r)-n]
	}
	if r == "" {
		r = "locked"
	}
	return Event{Version: Version, Kind: kind, Name: name, Alg: AlgReason, Digest: []byte(r)}
}
