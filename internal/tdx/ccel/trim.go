package ccel

import "encoding/binary"

// Used returns the length of the event log at the start of raw, which is a
// firmware log area (CCEL): the SHA-1-format Spec ID event, then crypto-
// agile events up to the first that is padding (all 0xFF), truncated or
// malformed. raw[:Used(raw)] parses to the same events as raw: the rest of
// the area is unmeasured padding, so an agent need not send it. A log this
// walk cannot read at all keeps its full length (the verifier then reports
// why it does not parse).
func Used(raw []byte) int {
	le := binary.LittleEndian
	// TCG_PCR_EVENT: PCRIndex, EventType, SHA-1 digest, EventSize, Event.
	const head = 4 + 4 + 20 + 4
	if len(raw) < head {
		return len(raw)
	}
	size := int(le.Uint32(raw[head-4:]))
	if size > len(raw)-head {
		return len(raw)
	}
	spec := raw[head : head+size]
	// TCG_EfiSpecIDEvent: Signature[16], platformClass, minor, major,
	// errata, uintnSize, numberOfAlgorithms, {algorithmId, digestSize}...
	const algs = 16 + 4 + 4
	if len(spec) < algs+4 || string(spec[:15]) != "Spec ID Event03" {
		return len(raw)
	}
	n := int(le.Uint32(spec[algs:]))
	if n == 0 || n > 16 || len(spec) < algs+4+4*n {
		return len(raw)
	}
	digests := map[uint16]int{}
	for i := 0; i < n; i++ {
		a := spec[algs+4+4*i:]
		digests[le.Uint16(a)] = int(le.Uint16(a[2:]))
	}
	off := head + size
	for {
		// TCG_PCR_EVENT2: PCRIndex, EventType, Count, {AlgID, Digest}...,
		// EventSize, Event.
		end, ok := event2End(raw, off, digests)
		if !ok {
			return off
		}
		off = end
	}
}

// event2End returns where the crypto-agile event at off ends; false at
// padding or an event that does not fit.
func event2End(raw []byte, off int, digests map[uint16]int) (int, bool) {
	le := binary.LittleEndian
	if len(raw)-off < 12 || le.Uint32(raw[off:]) == 0xffffffff {
		return 0, false
	}
	count := int(le.Uint32(raw[off+8:]))
	p := off + 12
	if count == 0 || count > len(digests) {
		return 0, false
	}
	for i := 0; i < count; i++ {
		if len(raw)-p < 2 {
			return 0, false
		}
		sz, ok := digests[le.Uint16(raw[p:])]
		if !ok || len(raw)-p-2 < sz {
			return 0, false
		}
		p += 2 + sz
	}
	if len(raw)-p < 4 {
		return 0, false
	}
	size := int(le.Uint32(raw[p:]))
	if size > len(raw)-p-4 {
		return 0, false
	}
	return p + 4 + size, true
}
