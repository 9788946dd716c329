package platform

// TD attribute expectations, the same on every profile, as 8 bytes of hex
// in quote-body order (little-endian).
//
// TDATTRIBUTES: only SEPT_VE_DISABLE (bit 28) set, DEBUG (bit 0) clear; a
// debug TD has DEBUG set as well.
//
// XFAM: x87, SSE, AVX, AVX-512 (opmask, ZMM_Hi256, Hi16_ZMM), CET (user
// and supervisor) and AMX (TILECFG, TILEDATA); PKRU is off. It is the QEMU
// TDX default for -cpu host on Sapphire Rapids.
const (
	tdAttributes      = "0000001000000000"
	tdAttributesDebug = "0100001000000000"
	XFAM              = "e718060000000000"
)

// TDAttributes returns the TDATTRIBUTES a TD launched by tdforge carries,
// with DEBUG set when debug is true.
func TDAttributes(debug bool) string {
	if debug {
		return tdAttributesDebug
	}
	return tdAttributes
}
