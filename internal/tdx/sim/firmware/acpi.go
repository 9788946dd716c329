package firmware

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/tdforge/tdforge/internal/guest/fwcfg"
)

// The ACPI tables are the one firmware input the launcher cannot see: QEMU
// builds them. A real TDVF measures the blobs it receives into RTMR0; so
// does the simulated firmware. The launcher's log carries the platform
// profile's ACPI digests; here they are replaced by the digests of the blobs
// QEMU actually handed over, and RTMR0 is replayed. A host that changes the
// VM's devices therefore shows up as an RTMR0 mismatch naming the ACPI
// event, as on hardware.

// ACPIBlobs are the fw_cfg files the firmware measures, in order.
var ACPIBlobs = []string{"etc/table-loader", "etc/acpi/rsdp", "etc/acpi/tables"}

const (
	evPlatformConfigFlags = 0x0000000a
	ccMRRTMR0             = 1 // CC MR index of RTMR0
)

// MeasureACPI digests the ACPI fw_cfg blobs and rewrites the "ACPI DATA"
// events of a TCG crypto-agile log to them. It returns the new log, the
// RTMR0 the log replays to, and the blobs whose digest differed from the log.
func MeasureACPI(fw fwcfg.Reader, log []byte) ([]byte, [48]byte, []string, error) {
	var actual [][48]byte
	for _, n := range ACPIBlobs {
		b, err := fw.Read(n)
		if err != nil {
			return nil, [48]byte{}, nil, fmt.Errorf("ACPI blob %s: %w", n, err)
		}
		actual = append(actual, sha512.Sum384(b))
	}
	out := append([]byte(nil), log...)
	events, err := walkLog(out)
	if err != nil {
		return nil, [48]byte{}, nil, err
	}
	var changed []string
	var rtmr0 [48]byte
	acpi := 0
	for _, e := range events {
		if e.index != ccMRRTMR0 {
			continue
		}
		if e.typ == evPlatformConfigFlags && bytes.HasPrefix(e.data, []byte("ACPI DATA")) {
			if acpi >= len(actual) {
				return nil, [48]byte{}, nil, errors.New("simulated CCEL has more than three ACPI DATA events")
			}
			d := out[e.digestOff : e.digestOff+48]
			if !bytes.Equal(d, actual[acpi][:]) {
				changed = append(changed, fmt.Sprintf("%s (profile %s…, QEMU %s…)", ACPIBlobs[acpi], hex.EncodeToString(d[:8]), hex.EncodeToString(actual[acpi][:8])))
				copy(d, actual[acpi][:])
			}
			acpi++
		}
		var buf [96]byte
		copy(buf[:48], rtmr0[:])
		copy(buf[48:], out[e.digestOff:e.digestOff+48])
		rtmr0 = sha512.Sum384(buf[:])
	}
	if acpi != len(actual) {
		return nil, [48]byte{}, nil, fmt.Errorf("simulated CCEL has %d ACPI DATA events, want %d", acpi, len(actual))
	}
	return out, rtmr0, changed, nil
}

type logEvent struct {
	index, typ uint32
	digestOff  int // offset of the SHA-384 digest in the log
	data       []byte
}

// walkLog parses a TCG crypto-agile log whose only bank is SHA-384.
func walkLog(b []byte) ([]logEvent, error) {
	le := binary.LittleEndian
	if len(b) < 32 {
		return nil, errors.New("CCEL: truncated header")
	}
	hdrSize := int(le.Uint32(b[28:32]))
	off := 32 + hdrSize
	if off > len(b) || !bytes.HasPrefix(b[32:], []byte("Spec ID Event03")) {
		return nil, errors.New("CCEL: no Spec ID Event03 header")
	}
	var out []logEvent
	for off+12 <= len(b) {
		index, typ, count := le.Uint32(b[off:]), le.Uint32(b[off+4:]), le.Uint32(b[off+8:])
		if index == 0xffffffff { // 0xFF padding
			break
		}
		if count != 1 || off+14+48+4 > len(b) || le.Uint16(b[off+12:]) != 0x000c {
			return nil, fmt.Errorf("CCEL: event at offset %d is not a single SHA-384 digest", off)
		}
		digestOff := off + 14
		size := int(le.Uint32(b[digestOff+48:]))
		dataOff := digestOff + 48 + 4
		if size < 0 || dataOff+size > len(b) {
			return nil, fmt.Errorf("CCEL: event at offset %d overruns the log", off)
		}
		out = append(out, logEvent{index: index, typ: typ, digestOff: digestOff, data: b[dataOff : dataOff+size]})
		off = dataOff + size
	}
	return out, nil
}
