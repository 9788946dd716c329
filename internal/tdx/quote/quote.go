// Package quote gets TDX quotes with a caller-chosen REPORTDATA from one of
// three backends: the kernel's configfs-tsm report interface, the
// /dev/tdx_guest device (through go-tdx-guest's client) or the TDX simulator
// (internal/tdx/sim, selected here).
//
// The simulator is used only when the boot policy says tdx.simulate; Open
// never falls back to it. In the guest only initd (root) opens a backend:
// it serves quotes to the agent over a unix socket (socket.go,
// initd/quoted) in the agent's REPORTDATA domain only, and the agent's
// Attester is the SocketClient.
package quote

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	"github.com/google/go-configfs-tsm/report"
	tdxclient "github.com/google/go-tdx-guest/client"

	"github.com/tdforge/tdforge/internal/tdx/sim"
)

// Provider names, as reported in attestation.Response.QuoteProvider.
const (
	NameConfigfsTSM = "configfs-tsm"
	NameTDXDevice   = "tdx-guest-device"
	NameSimulator   = sim.Name
)

// Provider produces a TDX quote v4 whose REPORTDATA is reportData.
type Provider interface {
	Name() string
	Quote(reportData [64]byte) ([]byte, error)
}

// TSMProviderTDX is the configfs-tsm "provider" attribute of the TDX guest driver.
const TSMProviderTDX = "tdx_guest"

// ConfigfsTSM quotes through /sys/kernel/config/tsm/report (Linux >= 6.7).
type ConfigfsTSM struct {
	// Client is the configfs client; linuxtsm.MakeClient() in a guest.
	Client configfsi.Client
	// WantProvider is the required "provider" attribute (default TSMProviderTDX).
	WantProvider string
}

// Name implements Provider.
func (*ConfigfsTSM) Name() string { return NameConfigfsTSM }

// Quote implements Provider.
func (c *ConfigfsTSM) Quote(reportData [64]byte) ([]byte, error) {
	resp, err := report.Get(c.Client, &report.Request{InBlob: reportData[:]})
	if err != nil {
		return nil, fmt.Errorf("configfs-tsm report: %w", err)
	}
	want := c.WantProvider
	if want == "" {
		want = TSMProviderTDX
	}
	if got := strings.TrimSpace(resp.Provider); got != want {
		return nil, fmt.Errorf("configfs-tsm report came from provider %q, want %q (is this a TDX guest?)", got, want)
	}
	return checkQuote(resp.OutBlob, reportData)
}

// TDXGuestDevice quotes through /dev/tdx_guest with go-tdx-guest's client
// (its QuoteProvider when configfs is present, else the device ioctls).
type TDXGuestDevice struct {
	// Source is what go-tdx-guest's client.GetRawQuote accepts: a
	// client.QuoteProvider or a client.Device.
	Source any
}

// Name implements Provider.
func (*TDXGuestDevice) Name() string { return NameTDXDevice }

// Quote implements Provider.
func (d *TDXGuestDevice) Quote(reportData [64]byte) ([]byte, error) {
	q, err := tdxclient.GetRawQuote(d.Source, reportData)
	if err != nil {
		return nil, fmt.Errorf("tdx_guest quote: %w", err)
	}
	return checkQuote(q, reportData)
}

// checkQuote makes sure a backend returned a quote v4 carrying our REPORTDATA.
func checkQuote(q []byte, want [64]byte) ([]byte, error) {
	got, err := sim.ReportData(q)
	if err != nil {
		return nil, fmt.Errorf("quote backend returned a malformed quote: %w", err)
	}
	if !bytes.Equal(got[:], want[:]) {
		return nil, errors.New("quote backend returned a quote with a different REPORTDATA than requested")
	}
	return q, nil
}

// OpenSimulator selects the TDX simulator (internal/tdx/sim) with its
// state in dir (normally sim.Dir).
func OpenSimulator(dir string) (Provider, error) {
	s, err := sim.Open(dir)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Device path of the TDX guest driver.
const DevicePath = "/dev/tdx_guest"

// Open returns the quote backend. With simulate (the policy's tdx.simulate,
// dev images only) it is the simulator over sim.Dir. Otherwise it is
// configfs-tsm when /sys/kernel/config/tsm/report exists, else
// /dev/tdx_guest; if neither exists Open fails: it never falls back to the
// simulator.
func Open(simulate bool) (Provider, error) {
	if simulate {
		return OpenSimulator(sim.Dir)
	}
	if c, err := linuxtsm.MakeClient(); err == nil {
		return &ConfigfsTSM{Client: c}, nil
	}
	if _, err := os.Stat(DevicePath); err == nil {
		dev, err := tdxclient.OpenDevice()
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", DevicePath, err)
		}
		return &TDXGuestDevice{Source: dev}, nil
	}
	return nil, fmt.Errorf("no TDX quote backend: neither %s/report nor %s exists. This is not a TDX guest (needs a TDX host and a guest kernel with TDX support, >= 6.7 for configfs-tsm); the simulator is used only for dev images whose policy sets tdx.simulate",
		configfsi.TsmPrefix, DevicePath)
}
