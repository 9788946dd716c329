package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/sim"
)

// Default evidence locations inside the guest.
const (
	DefaultRuntimeLog = "/run/tdforge/runtime-log.cel"
	DefaultACPITables = "/sys/firmware/acpi/tables"
)

// Evidence says where the event logs are.
type Evidence struct {
	// RuntimeLog is initd's RTMR3 runtime log (TCG CEL).
	RuntimeLog string
	// ACPITables holds CCEL (the table) and data/CCEL (the log) when the
	// firmware published them.
	ACPITables string
	// SimDir is the simulator state directory; its ccel.bin and
	// ccel-table.bin are used when Simulated and ACPI has no CCEL.
	SimDir    string
	Simulated bool
}

// Logs is one snapshot of the event logs.
type Logs struct {
	RuntimeLog     []byte
	RuntimeLogJSON []event.JSONEvent
	CCEL           []byte
	CCELTable      []byte
}

// Read loads the runtime log (required; it is parsed and checked, and its
// JSON rendering derived from it) and the CCEL when present.
func (e Evidence) Read() (*Logs, error) {
	raw, err := os.ReadFile(e.RuntimeLog)
	if err != nil {
		return nil, fmt.Errorf("runtime event log unavailable (initd writes %s before starting the agent): %w", e.RuntimeLog, err)
	}
	l, err := event.ParseLog(raw)
	if err != nil {
		return nil, fmt.Errorf("runtime event log %s: %w", e.RuntimeLog, err)
	}
	js, err := event.JSONEvents(l.Events())
	if err != nil {
		return nil, fmt.Errorf("runtime event log %s: %w", e.RuntimeLog, err)
	}
	out := &Logs{RuntimeLog: raw, RuntimeLogJSON: js}
	out.CCELTable, out.CCEL, err = e.ccel()
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (e Evidence) ccel() (table, log []byte, err error) {
	if e.ACPITables != "" {
		table, log, err = readPair(filepath.Join(e.ACPITables, "CCEL"), filepath.Join(e.ACPITables, "data", "CCEL"))
		if err != nil || table != nil {
			return table, log, err
		}
	}
	if e.Simulated && e.SimDir != "" {
		return readPair(filepath.Join(e.SimDir, sim.CCELTableFile), filepath.Join(e.SimDir, sim.CCELFile))
	}
	return nil, nil, nil
}

// readPair reads a CCEL table and its log: both or neither.
func readPair(tablePath, logPath string) ([]byte, []byte, error) {
	table, err := os.ReadFile(tablePath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("CCEL table: %w", err)
	}
	log, err := os.ReadFile(logPath)
	if err != nil {
		return nil, nil, fmt.Errorf("CCEL table %s is present but its event log is not: %w", tablePath, err)
	}
	return table, log, nil
}
