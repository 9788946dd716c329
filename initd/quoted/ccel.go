package quoted

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/tdx/ccel"
	"github.com/tdforge/tdforge/internal/tdx/quote"
)

// Default locations: where the kernel publishes the firmware's ACPI tables
// (root-only 0400 files) and where initd republishes the CCEL for the
// agent, in the same layout (CCEL, data/CCEL) plus AbsentFile.
const (
	DefaultACPITables = "/sys/firmware/acpi/tables"
	DefaultCCELDir    = quote.CCELDir
)

// AbsentFile, in the CCEL directory, holds why there is no CCEL; the agent
// serves it as attestation.Response.CCELAbsent.
const AbsentFile = quote.CCELAbsentFile

// CCELSource is one place the firmware's CCEL may be: the table and its log.
type CCELSource struct {
	Table, Log string
}

// ACPISource is the kernel's view of the firmware's CCEL under acpiDir.
func ACPISource(acpiDir string) CCELSource {
	return CCELSource{Table: filepath.Join(acpiDir, "CCEL"), Log: filepath.Join(acpiDir, "data", "CCEL")}
}

// CCEL is what PublishCCEL published: the table and its log (events
// only), or, with neither, why there is none.
type CCEL struct {
	Table, Log []byte
	Absent     string
}

// PublishCCEL copies the first source whose table exists to dir/CCEL and
// dir/data/CCEL (0640 root:gid, initd being root, so the agent's group reads them and
// nothing else) and returns what it wrote, for initd's own evidence (the
// key broker's). When no source has a table, it writes the reason to
// dir/AbsentFile instead and returns it in Absent. A table without its log
// is an error: the firmware published half an event log. dir is replaced
// as a whole, so stale copies never survive.
func PublishCCEL(dir string, gid int, sources ...CCELSource) (CCEL, error) {
	if err := os.RemoveAll(dir); err != nil {
		return CCEL{}, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o750); err != nil {
		return CCEL{}, err
	}
	for _, d := range []string{dir, filepath.Join(dir, "data")} {
		if err := os.Chown(d, os.Getuid(), gid); err != nil {
			return CCEL{}, err
		}
	}
	var missing []string
	for _, src := range sources {
		table, err := os.ReadFile(src.Table)
		if errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, src.Table)
			continue
		}
		if err != nil {
			return CCEL{}, fmt.Errorf("CCEL table: %w", err)
		}
		log, err := os.ReadFile(src.Log)
		if err != nil {
			return CCEL{}, fmt.Errorf("CCEL table %s is present but its event log is not: %w", src.Table, err)
		}
		if err := writeGroup(filepath.Join(dir, "CCEL"), table, gid); err != nil {
			return CCEL{}, err
		}
		// Only the events: the rest of the log area is unmeasured padding
		// that every verifier would otherwise receive and decode.
		log = log[:ccel.Used(log)]
		if err := writeGroup(filepath.Join(dir, "data", "CCEL"), log, gid); err != nil {
			return CCEL{}, err
		}
		return CCEL{Table: table, Log: log}, nil
	}
	absent := "no CCEL ACPI table: the firmware did not publish its event log"
	if len(missing) > 0 {
		absent = fmt.Sprintf("no CCEL ACPI table: %s does not exist (the firmware did not publish its event log)", missing[0])
		for _, m := range missing[1:] {
			absent += fmt.Sprintf("; nor does %s", m)
		}
	}
	if err := writeGroup(filepath.Join(dir, AbsentFile), []byte(absent+"\n"), gid); err != nil {
		return CCEL{}, err
	}
	return CCEL{Absent: absent}, nil
}

func writeGroup(path string, b []byte, gid int) error {
	return fsutil.WriteFrom(path, 0o640, func(w io.Writer) error {
		if f, ok := w.(*fsutil.File); ok {
			if err := f.Chown(os.Getuid(), gid); err != nil {
				return err
			}
		}
		_, err := w.Write(b)
		return err
	})
}
