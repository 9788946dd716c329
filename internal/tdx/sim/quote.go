package sim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/tdforge/tdforge/internal/tdx/register"
)

// Quote v4 layout (Intel TDX DCAP quote format), byte offsets and sizes.
const (
	HeaderSize       = 0x30
	BodySize         = 0x248
	BodyOffset       = HeaderSize
	ReportDataInBody = 0x208
	qeReportSize     = 0x180
	sigSize          = 0x40

	quoteVersion   = 4
	attKeyTypeP256 = 2
	teeTypeTDX     = 0x81
	certTypeQEData = 6 // QE report certification data
	certTypePCKPEM = 5 // PCK certificate chain, concatenated PEM
)

// Body field offsets inside the TD quote body.
const (
	offTEETCBSVN     = 0x00
	offMRSEAM        = 0x10
	offMRSIGNERSEAM  = 0x40
	offSEAMAttrs     = 0x70
	offTDAttributes  = 0x78
	offXFAM          = 0x80
	offMRTD          = 0x88
	offMRCONFIGID    = 0xB8
	offMROWNER       = 0xE8
	offMROWNERCONFIG = 0x118
	offRTMR0         = 0x148
)

// QEVendorIntel is the QE vendor ID of Intel's quoting enclave; the
// simulator reports it so parsers treat the quote as an ordinary TDX quote.
var QEVendorIntel = []byte{0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07}

// SimUserData marks simulated quotes in the header's 20-byte user data
// field (a real QE puts its QE ID there).
var SimUserData = []byte("TDFORGE-TDX-SIM\x00\x00\x00\x00\x00")

// Simulated quoting-enclave identity.
const (
	simQESVN  = 8
	simPCESVN = 11
)

// Simulator produces simulated TDX quotes.
type Simulator struct {
	regs   func() (*Registers, error)
	attKey *ecdsa.PrivateKey
	attPub [64]byte
	// certData is the constant tail of every quote: certification data
	// type 6 (QE report, its PCK signature, QE auth data, PCK chain).
	certData []byte
}

// New checks the PKI (the chain verifies, the PCK key matches the PCK
// certificate) and prepares the QE report signed by the PCK key. regs is
// called once per quote to read the current simulated registers.
func New(pki *PKI, regs func() (*Registers, error)) (*Simulator, error) {
	if pki == nil {
		return nil, errors.New("sim: no simulator PKI")
	}
	if regs == nil {
		return nil, errors.New("sim: no register source")
	}
	root, err := parseCertPEM("root", pki.RootCert)
	if err != nil {
		return nil, err
	}
	inter, err := parseCertPEM("intermediate", pki.IntermediateCert)
	if err != nil {
		return nil, err
	}
	pck, err := parseCertPEM("PCK", pki.PCKCert)
	if err != nil {
		return nil, err
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("sim: intermediate certificate is not signed by the root: %w", err)
	}
	if err := pck.CheckSignatureFrom(inter); err != nil {
		return nil, fmt.Errorf("sim: PCK certificate is not signed by the intermediate: %w", err)
	}
	pckKey, err := parseKeyPEM("PCK key", pki.PCKKey)
	if err != nil {
		return nil, err
	}
	if pub, ok := pck.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&pckKey.PublicKey) {
		return nil, errors.New("sim: PCK key does not match the PCK certificate")
	}
	attKey, err := parseKeyPEM("attestation key", pki.AttestationKey)
	if err != nil {
		return nil, err
	}
	s := &Simulator{regs: regs, attKey: attKey}
	attKey.PublicKey.X.FillBytes(s.attPub[:32])
	attKey.PublicKey.Y.FillBytes(s.attPub[32:])

	// QE authentication data: arbitrary bytes bound into the QE report.
	authData := []byte("tdforge simulated quoting enclave")
	qeReport := make([]byte, qeReportSize)
	copy(qeReport[0x00:0x10], SimCPUSVN)                            // CPUSVN
	copy(qeReport[0x30:0x40], []byte{0x11, 0, 0, 0, 0, 0, 0, 0, 7}) // ATTRIBUTES
	mrEnclave := sha256.Sum256([]byte(keyDomain + "qe-mrenclave"))
	copy(qeReport[0x40:0x60], mrEnclave[:])
	mrSigner := sha256.Sum256([]byte(keyDomain + "qe-mrsigner"))
	copy(qeReport[0x80:0xA0], mrSigner[:])
	binary.LittleEndian.PutUint16(qeReport[0x100:], 2) // ISVPRODID (TD QE)
	binary.LittleEndian.PutUint16(qeReport[0x102:], simQESVN)
	h := sha256.New()
	h.Write(s.attPub[:])
	h.Write(authData)
	copy(qeReport[0x140:0x160], h.Sum(nil)) // REPORTDATA = SHA-256(att key || auth data) || 0^32
	qeSig, err := signRaw(pckKey, qeReport)
	if err != nil {
		return nil, fmt.Errorf("sim: signing the QE report: %w", err)
	}

	chain := []byte(pki.PCKCert + pki.IntermediateCert + pki.RootCert)
	var inner bytes.Buffer
	inner.Write(qeReport)
	inner.Write(qeSig)
	binary.Write(&inner, binary.LittleEndian, uint16(len(authData)))
	inner.Write(authData)
	binary.Write(&inner, binary.LittleEndian, uint16(certTypePCKPEM))
	binary.Write(&inner, binary.LittleEndian, uint32(len(chain)))
	inner.Write(chain)

	var cd bytes.Buffer
	binary.Write(&cd, binary.LittleEndian, uint16(certTypeQEData))
	binary.Write(&cd, binary.LittleEndian, uint32(inner.Len()))
	cd.Write(inner.Bytes())
	s.certData = cd.Bytes()
	return s, nil
}

func decodeHex(field, s string, n int) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != n {
		return nil, fmt.Errorf("sim: simulated register %s must be %d hex digits, got %q", field, 2*n, s)
	}
	return b, nil
}

// Body returns the 0x248-byte TD quote body for the registers and reportData.
func Body(r *Registers, reportData [64]byte) ([]byte, error) {
	body := make([]byte, BodySize)
	fields := []struct {
		name string
		val  string
		off  int
		n    int
	}{
		{"tee_tcb_svn", r.TEETCBSVN, offTEETCBSVN, 16},
		{"mrseam", r.MRSEAM, offMRSEAM, 48},
		{"td_attributes", r.TDAttributes, offTDAttributes, 8},
		{"xfam", r.XFAM, offXFAM, 8},
	}
	for _, f := range fields {
		b, err := decodeHex(f.name, f.val, f.n)
		if err != nil {
			return nil, err
		}
		copy(body[f.off:], b)
	}
	for _, reg := range register.All {
		v, err := r.Value(reg)
		if err != nil {
			return nil, fmt.Errorf("sim: simulated register %w", err)
		}
		off := offMRTD
		if reg.IsRTMR() {
			off = offRTMR0 + 48*reg.RTMRIndex()
		}
		copy(body[off:], v[:])
	}
	copy(body[ReportDataInBody:], reportData[:])
	return body, nil
}

// Quote returns a simulated quote v4 over the current registers with the
// given REPORTDATA, signed by the attestation key.
func (s *Simulator) Quote(reportData [64]byte) ([]byte, error) {
	regs, err := s.regs()
	if err != nil {
		return nil, fmt.Errorf("sim: reading simulated registers: %w", err)
	}
	body, err := Body(regs, reportData)
	if err != nil {
		return nil, err
	}
	header := make([]byte, HeaderSize)
	binary.LittleEndian.PutUint16(header[0:], quoteVersion)
	binary.LittleEndian.PutUint16(header[2:], attKeyTypeP256)
	binary.LittleEndian.PutUint32(header[4:], teeTypeTDX)
	binary.LittleEndian.PutUint16(header[8:], simPCESVN)
	binary.LittleEndian.PutUint16(header[10:], simQESVN)
	copy(header[12:28], QEVendorIntel)
	copy(header[28:48], SimUserData)

	signed := append(header, body...)
	sig, err := signRaw(s.attKey, signed)
	if err != nil {
		return nil, fmt.Errorf("sim: signing the quote: %w", err)
	}
	sdLen := sigSize + len(s.attPub) + len(s.certData)
	q := make([]byte, 0, len(signed)+4+sdLen)
	q = append(q, signed...)
	q = binary.LittleEndian.AppendUint32(q, uint32(sdLen))
	q = append(q, sig...)
	q = append(q, s.attPub[:]...)
	q = append(q, s.certData...)
	return q, nil
}

// ReportData extracts the 64-byte REPORTDATA of a quote v4.
func ReportData(quote []byte) ([64]byte, error) {
	var rd [64]byte
	if len(quote) < BodyOffset+BodySize {
		return rd, fmt.Errorf("quote is %d bytes, shorter than a quote v4 header and body", len(quote))
	}
	if v := binary.LittleEndian.Uint16(quote); v != quoteVersion {
		return rd, fmt.Errorf("quote version %d, want %d", v, quoteVersion)
	}
	copy(rd[:], quote[BodyOffset+ReportDataInBody:])
	return rd, nil
}

// Root parses the PKI's root certificate.
func Root(pki *PKI) (*x509.Certificate, error) { return parseCertPEM("root", pki.RootCert) }

// Open loads the simulator PKI from dir (normally Dir) and returns a quote
// provider that reads the registers from dir on every quote.
func Open(dir string) (*Simulator, error) {
	pki, err := LoadPKI(dir)
	if err != nil {
		return nil, fmt.Errorf("TDX simulator: %w (initd writes it from fw_cfg %s)", err, FWCfgPKI)
	}
	return New(pki, func() (*Registers, error) { return LoadRegisters(dir) })
}

// Name implements quote.Provider.
func (*Simulator) Name() string { return Name }
