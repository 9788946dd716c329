package server

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/quote"
)

// Default evidence locations inside the guest. The kernel's ACPI tables
// are root-only, so initd republishes the CCEL (from ACPI, or from the
// simulated firmware) in DefaultACPITables, in the same layout, for the
// agent's group (initd/quoted.PublishCCEL).
const (
	DefaultRuntimeLog = "/run/tdforge/runtime-log.cel"
	DefaultACPITables = quote.CCELDir
)

// CCELAbsentFile, in the ACPI tables directory, is initd's reason for
// publishing no CCEL.
const CCELAbsentFile = quote.CCELAbsentFile

// Evidence says where the event logs are.
type Evidence struct {
	// RuntimeLog is initd's RTMR3 runtime log (TCG CEL).
	RuntimeLog string
	// ACPITables holds CCEL (the table) and data/CCEL (the log) when the
	// firmware published them, else CCELAbsentFile.
	ACPITables string
}

// Logs is one snapshot of the event logs.
type Logs struct {
	RuntimeLog     []byte
	RuntimeLogJSON []event.JSONEvent
	CCEL           []byte
	CCELTable      []byte
	// CCELAbsent says exactly why CCEL is empty
	// (attestation.Response.CCELAbsent); empty when it is served.
	CCELAbsent string
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
	out.CCELTable, out.CCEL, out.CCELAbsent, err = e.ccel()
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ccel reads the CCEL pair, or the reason there is none: initd's, else
// what is missing here.
func (e Evidence) ccel() (table, log []byte, absent string, err error) {
	if e.ACPITables == "" {
		return nil, nil, "no CCEL: the agent was given no ACPI tables directory", nil
	}
	tablePath := filepath.Join(e.ACPITables, "CCEL")
	table, log, err = readPair(tablePath, filepath.Join(e.ACPITables, "data", "CCEL"))
	if err != nil || table != nil {
		return table, log, "", err
	}
	why, err := os.ReadFile(filepath.Join(e.ACPITables, CCELAbsentFile))
	if err == nil && len(bytes.TrimSpace(why)) > 0 {
		return nil, nil, string(bytes.TrimSpace(why)), nil
	}
	return nil, nil, fmt.Sprintf("no CCEL: %s does not exist and initd left no reason in %s", tablePath, CCELAbsentFile), nil
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

// Locked returns the encrypted payloads initd left locked, each with the
// measured reason (its payload-locked event in the runtime log), e.g.
// {"model": "broker refused: RTMR2 mismatch"}; an unreadable log is an
// error.
func (e Evidence) Locked() (map[string]string, error) {
	raw, err := os.ReadFile(e.RuntimeLog)
	if err != nil {
		return nil, fmt.Errorf("runtime event log unavailable: %w", err)
	}
	l, err := event.ParseLog(raw)
	if err != nil {
		return nil, fmt.Errorf("runtime event log %s: %w", e.RuntimeLog, err)
	}
	out := map[string]string{}
	for _, ev := range l.Events() {
		if ev.Kind == event.KindPayloadLocked {
			out[ev.Name] = string(ev.Digest)
		}
	}
	return out, nil
}

// LockedStatus renders locked payloads as "model: locked (reason)", sorted
// and joined with "; ".
func LockedStatus(locked map[string]string) string {
	var parts []string
	for name, why := range locked {
		parts = append(parts, fmt.Sprintf("%s: locked (%s)", name, why))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}
