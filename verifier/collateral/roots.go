package collateral

import (
	"crypto/x509"
	_ "embed"
	"encoding/pem"
	"errors"
	"fmt"
)

// intelRootPEM is Intel's public SGX Root CA certificate, the root of every
// genuine TDX PCK certificate chain.
//
//go:embed intel_sgx_root_ca.pem
var intelRootPEM []byte

var intelRoot = func() *x509.Certificate {
	b, _ := pem.Decode(intelRootPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		panic("collateral: embedded Intel root: " + err.Error())
	}
	return c
}()

// IntelRoot returns Intel's SGX Root CA certificate.
func IntelRoot() *x509.Certificate { return intelRoot }

// IntelRoots returns a pool holding only Intel's SGX Root CA.
func IntelRoots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(intelRoot)
	return p
}

// firstCert parses the first PEM certificate of a chain.
func firstCert(chain []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(chain)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("quote: no PEM PCK certificate chain in the certification data")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("quote: PCK certificate: %v", err)
	}
	return c, nil
}
