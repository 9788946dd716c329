package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// buildLog is where the tools' own output goes (compiler warnings of cgo
// builds, go's download lines): a file beside the output, never inside it
// (the output directory is hashed and compared file by file). It is echoed
// to the terminal with --verbose and its end shown when a run fails.
type buildLog struct {
	path string
	f    *os.File
	w    io.Writer
	temp bool // a scratch log, removed after a successful run
}

// logTail is how many lines of the log a failure shows.
const logTail = 40

// openBuildLog creates (truncating) the log at path, or a scratch file when
// path is "". With verbose, everything written is echoed to echo.
func openBuildLog(path string, verbose bool, echo io.Writer) (*buildLog, error) {
	l := &buildLog{path: path}
	var err error
	if path == "" {
		l.f, err = os.CreateTemp("", "tdforge-*.build.log")
		l.temp = true
	} else {
		if err = os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
			l.f, err = os.Create(path)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("build log: %w", err)
	}
	l.path = l.f.Name()
	l.w = l.f
	if verbose {
		l.w = io.MultiWriter(l.f, echo)
	}
	return l, nil
}

func (l *buildLog) Write(p []byte) (int, error) { return l.w.Write(p) }

// finish closes the log. After a failure it writes the log's last lines to
// w (unless they were echoed already) and keeps the file; a scratch log of
// a successful run is removed.
func (l *buildLog) finish(failed, verbose bool, w io.Writer) {
	l.f.Close()
	if !failed {
		if l.temp {
			os.Remove(l.path)
		}
		return
	}
	b, err := os.ReadFile(l.path)
	if err != nil || len(b) == 0 || verbose {
		return
	}
	lines := bytes.SplitAfter(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > logTail {
		fmt.Fprintf(w, "... (%d earlier lines in %s)\n", len(lines)-logTail, l.path)
		lines = lines[len(lines)-logTail:]
	} else {
		fmt.Fprintf(w, "build log %s:\n", l.path)
	}
	for _, line := range lines {
		w.Write(line)
	}
	fmt.Fprintln(w)
}
