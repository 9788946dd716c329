package verify_test

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/internal/testutil/testdeps"
	"github.com/tdforge/tdforge/verifier/record"
	"github.com/tdforge/tdforge/verifier/verify"
)

// go-eventlog's real COS TDX CCEL fixture and the RTMRs it replays to
// (from go-eventlog's ccel/replay_test.go).
var (
	cosRTMR0 = []byte("?\xa2\xf6\x1f9[\x7f_\xee\xfbN\xc2\xdfa)\x7f\x10\x9aث\xcdd\x10\xc1\xb7\xdf`\xf2\x1f7\xb1\x92\x97\xfc5\xe5D\x03\x9c~\x1e\xde\xceu*\xfd\x17\xf6")
	cosRTMR1 = []byte("\xf6-\xbc\a+\xd5\xd3\xf3C\x8b{5Úr\x7fZ\xea/\xfc$s\xf47#\x95?S\r\xafbPO\nyD\xaab\xc4\x1a\x86\xe8\xa8x±\"\xc1")
	cosRTMR2 = []byte("IihM\xc8s\x81\xfc;14\x17l\x8d\x88\x06\xea\xf0\xa9\x01\x85\x9f_pϮ\x8d\x17qKF\xc1\n\x8d\xe2\x19\x04\x8c\x9f\xc0\x9f\x11\xf3\x81\xa6\xfb\xe7\xc1")
)

func eventlogTestdata(t testing.TB, name string) []byte { return testdeps.EventlogFixture(t, name) }

// simTD is a simulated TD: the COS firmware log for RTMR0..2, a tdforge
// runtime log for RTMR3 and the TDX simulator for quotes.
type simTD struct {
	pki      *sim.PKI
	regs     sim.Registers
	sim      *sim.Simulator
	ccel     []byte
	table    []byte
	runtime  []byte
	payloads []event.Event
}

func payloadEvents() []event.Event {
	var out []event.Event
	for _, n := range []string{"ollama", "model", "webui"} {
		d := sha256.Sum256([]byte("root hash of " + n))
		out = append(out, event.Event{Version: event.Version, Kind: event.KindPayload, Name: n, Alg: event.AlgVerity, Digest: d[:]})
	}
	d := sha256.Sum256([]byte("config"))
	return append(out, event.Event{Version: event.Version, Kind: event.KindConfig, Name: "runtime", Alg: event.AlgSHA256, Digest: d[:]})
}

func newSimTD(t testing.TB, attrs string) *simTD {
	t.Helper()
	pki, err := sim.NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	td := &simTD{pki: pki, ccel: eventlogTestdata(t, "cos-113-intel-tdx.bin"), table: eventlogTestdata(t, "cos-113-intel-tdx.table.bin"), payloads: payloadEvents()}
	log := event.NewLog()
	var rtmr3 [48]byte
	for _, e := range td.payloads {
		if err := log.Append(e, func(m [48]byte) error { rtmr3 = event.Extend(rtmr3, m); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	td.runtime, err = log.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	mrtd := sha256.Sum256([]byte("mrtd"))
	td.regs = sim.Registers{Platform: sim.Platform{
		MRTD:         hex.EncodeToString(append(mrtd[:], mrtd[:16]...)),
		RTMR:         [3]string{hex.EncodeToString(cosRTMR0), hex.EncodeToString(cosRTMR1), hex.EncodeToString(cosRTMR2)},
		TDAttributes: attrs,
		XFAM:         "e71a060000000000",
		MRSEAM:       hex.EncodeToString(make([]byte, 48)),
		TEETCBSVN:    "03000400000000000000000000000000",
	}, RTMR3: hex.EncodeToString(rtmr3[:])}
	td.sim, err = sim.New(pki, func() (*sim.Registers, error) { r := td.regs; return &r, nil })
	if err != nil {
		t.Fatal(err)
	}
	return td
}

func (td *simTD) quote(t testing.TB, nonce []byte, spki [32]byte) []byte {
	t.Helper()
	rd, err := attestation.ReportData(nonce, spki)
	if err != nil {
		t.Fatal(err)
	}
	q, err := td.sim.Quote(rd)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func (td *simTD) evidence(q []byte) verify.Evidence {
	return verify.Evidence{Quote: q, CCEL: td.ccel, CCELTable: td.table, RuntimeLog: td.runtime}
}

// reference records a dev/simulated reference document from a good quote.
func (td *simTD) reference(t testing.TB) *refvalues.Document {
	t.Helper()
	q := td.quote(t, make([]byte, 32), [32]byte{})
	doc, err := record.Reference(td.evidence(q), refvalues.Image{Name: "sim-image", Version: "1", Dev: true, Simulated: true})
	if err != nil {
		t.Fatal(err)
	}
	return doc
}
