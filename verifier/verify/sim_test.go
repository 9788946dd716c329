package verify_test

import (
	"crypto/sha256"
	"testing"

	"github.com/tdforge/tdforge/internal/testutil/simtd"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/verifier/record"
	"github.com/tdforge/tdforge/verifier/verify"
)

// simTD is a simulated TD: the COS firmware log for RTMR0..2, a tdforge
// runtime log for RTMR3 and the TDX simulator for quotes.
type simTD struct {
	pki      *sim.PKI
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
	c := simtd.NewLogged(t, "mrtd", attrs, payloadEvents())
	return &simTD{pki: c.PKI, sim: c.Simulator, ccel: c.CCEL, table: c.CCELTable, runtime: c.RuntimeLog, payloads: payloadEvents()}
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
