package measure

import (
	"errors"
	"fmt"

	"github.com/tdforge/tdforge/internal/tdx/ccel"
	"github.com/tdforge/tdforge/internal/tdx/register"
)

// CCEL encodes the result's RTMR0..2 firmware events (ccel.Encode); every
// one of those registers must be known.
func (r *Result) CCEL() (table, log []byte, err error) {
	for _, reg := range register.Firmware {
		if r.Value(reg) == nil {
			return nil, nil, fmt.Errorf("CCEL: %s is unknown: %s", reg, r.Reasons[reg.Key()])
		}
	}
	if len(r.FirmwareEvents) == 0 {
		return nil, nil, errors.New("CCEL: no firmware events")
	}
	return ccel.Encode(r.FirmwareEvents)
}

// Launch is what the TDX module and the firmware hand a TD at kernel entry:
// MRTD, RTMR0..2 and the firmware event log (CCEL) behind them. The
// simulator (`builder launch --simulate`) starts the guest from it.
type Launch struct {
	MRTD      [48]byte
	RTMR      [3][48]byte // RTMR0..2
	CCELTable []byte      // CCEL ACPI table
	CCEL      []byte      // firmware event log
}

// Launch returns the registers and CCEL at kernel entry; MRTD and RTMR0..2
// must be known.
func (r *Result) Launch() (*Launch, error) {
	if r.MRTD == nil {
		return nil, fmt.Errorf("cannot compute MRTD: %s", r.Reasons[register.MRTD.Key()])
	}
	l := &Launch{MRTD: *r.MRTD}
	for _, reg := range register.Firmware {
		v := r.Value(reg)
		if v == nil {
			return nil, fmt.Errorf("cannot compute %s: %s", reg, r.Reasons[reg.Key()])
		}
		l.RTMR[reg.RTMRIndex()] = *v
	}
	var err error
	if l.CCELTable, l.CCEL, err = r.CCEL(); err != nil {
		return nil, err
	}
	return l, nil
}
