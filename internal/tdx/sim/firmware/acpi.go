package firmware

import (
	"crypto/sha512"
	"encoding/hex"
	"fmt"

	"github.com/tdforge/tdforge/internal/guest/fwcfg"
	"github.com/tdforge/tdforge/internal/tdx/ccel"
	"github.com/tdforge/tdforge/internal/tdx/register"
)

// The ACPI tables are the one firmware input the launcher cannot see: QEMU
// builds them. A real TDVF measures the blobs it receives into RTMR0; so
// does the simulated firmware. The launcher's log carries the platform
// profile's ACPI digests; here they are replaced by the digests of the blobs
// QEMU actually handed over, and RTMR0 is replayed. A host that changes the
// VM's devices therefore shows up as an RTMR0 mismatch naming the ACPI
// event, as on hardware.

// MeasureACPI digests the ACPI fw_cfg blobs (ccel.ACPIBlobs) and rewrites
// the ACPI events of the launcher's CCEL (made by ccel.Encode) to them. It
// returns the new log, the RTMR0 the log replays to, and the blobs whose
// digest differed from the log.
func MeasureACPI(fw fwcfg.Reader, log []byte) ([]byte, [48]byte, []string, error) {
	var actual [][48]byte
	for _, n := range ccel.ACPIBlobs {
		b, err := fw.Read(n)
		if err != nil {
			return nil, [48]byte{}, nil, fmt.Errorf("ACPI blob %s: %w", n, err)
		}
		actual = append(actual, sha512.Sum384(b))
	}
	events, _, err := ccel.Parse(log)
	if err != nil {
		return nil, [48]byte{}, nil, err
	}
	var changed []string
	acpi := 0
	for i, e := range events {
		if !e.IsACPI() {
			continue
		}
		if acpi >= len(actual) {
			return nil, [48]byte{}, nil, fmt.Errorf("simulated CCEL has more than %d ACPI DATA events", len(actual))
		}
		if *e.Digest != actual[acpi] {
			changed = append(changed, fmt.Sprintf("%s (profile %s…, QEMU %s…)", ccel.ACPIBlobs[acpi], hex.EncodeToString(e.Digest[:8]), hex.EncodeToString(actual[acpi][:8])))
			events[i].Digest = &actual[acpi]
		}
		acpi++
	}
	if acpi != len(actual) {
		return nil, [48]byte{}, nil, fmt.Errorf("simulated CCEL has %d ACPI DATA events, want %d", acpi, len(actual))
	}
	_, out, err := ccel.Encode(events)
	if err != nil {
		return nil, [48]byte{}, nil, err
	}
	rtmr0, _ := ccel.Replay(events, register.RTMR0)
	return out, rtmr0, changed, nil
}
