package platform

import (
	"encoding/binary"
	"encoding/hex"
	"testing"
)

func TestTDAttributes(t *testing.T) {
	const (
		debugBit      = 1 << 0
		septVEDisable = 1 << 28
	)
	for _, debug := range []bool{false, true} {
		b, err := hex.DecodeString(TDAttributes(debug))
		if err != nil || len(b) != 8 {
			t.Fatalf("TDAttributes(%v) = %q: not 8 bytes of hex", debug, TDAttributes(debug))
		}
		want := uint64(septVEDisable)
		if debug {
			want |= debugBit
		}
		if got := binary.LittleEndian.Uint64(b); got != want {
			t.Errorf("TDAttributes(%v) = %#x, want %#x", debug, got, want)
		}
	}
	// XFAM is published in every reference-values document: x87, SSE, AVX,
	// opmask, ZMM_Hi256, Hi16_ZMM, CET_U, CET_S, AMX TILECFG and TILEDATA.
	b, err := hex.DecodeString(XFAM)
	if err != nil || len(b) != 8 {
		t.Fatalf("XFAM %q: not 8 bytes of hex", XFAM)
	}
	if got, want := binary.LittleEndian.Uint64(b), uint64(1<<0|1<<1|1<<2|1<<5|1<<6|1<<7|1<<11|1<<12|1<<17|1<<18); got != want {
		t.Errorf("XFAM = %#x, want %#x", got, want)
	}
}
