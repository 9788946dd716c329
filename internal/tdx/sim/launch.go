package sim

import (
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
)

// Simulated TDX module identity: fixed, recognisable values (a real MRSEAM
// is the TDX module's hash; a real TEE_TCB_SVN its security version).
var (
	ModuleMRSEAM    = sha512.Sum384([]byte("tdforge simulated TDX module"))
	ModuleTEETCBSVN = "03000600000000000000000000000000"
)

// NewPlatform returns what the simulated TDX module reports for a TD whose
// MRTD and RTMR0..2 at kernel entry are given (see measure.Result.Launch),
// with the TD attributes and XFAM (hex) it was launched with.
func NewPlatform(mrtd [48]byte, rtmr [3][48]byte, tdAttributes, xfam string) Platform {
	p := Platform{
		MRTD:         hex.EncodeToString(mrtd[:]),
		TDAttributes: tdAttributes,
		XFAM:         xfam,
		MRSEAM:       hex.EncodeToString(ModuleMRSEAM[:]),
		TEETCBSVN:    ModuleTEETCBSVN,
	}
	for i, v := range rtmr {
		p.RTMR[i] = hex.EncodeToString(v[:])
	}
	return p
}

// FWCfgEntry is one fw_cfg entry `builder launch --simulate` hands QEMU.
type FWCfgEntry struct {
	Name string // fw_cfg name, e.g. FWCfgPlatform
	Data []byte
}

// FWCfg returns, in order, the fw_cfg entries the simulated firmware
// (internal/tdx/sim/firmware) starts the guest from: the platform, the
// firmware event log and its ACPI table, and the launch's fresh PKI
// (NewPKI, JSON), which only initd reads in the guest.
func FWCfg(p Platform, ccelTable, ccelLog, pki []byte) ([]FWCfgEntry, error) {
	pj, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, err
	}
	return []FWCfgEntry{
		{FWCfgPlatform, pj},
		{FWCfgCCEL, ccelLog},
		{FWCfgCCELACPI, ccelTable},
		{FWCfgPKI, pki},
	}, nil
}
