package progress

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
)

func TestLinesReporter(t *testing.T) {
	var buf bytes.Buffer
	task := Lines(&buf).Start("download x", 10)
	n, err := io.Copy(io.Discard, Reader(strings.NewReader("0123456789"), task))
	if err != nil || n != 10 {
		t.Fatal(n, err)
	}
	task.Done()
	task.Done()
	if out := buf.String(); !strings.HasPrefix(out, "  download x: 10 B in ") || strings.Count(out, "\n") != 1 {
		t.Fatalf("unexpected lines:\n%s", out)
	}
}

// A task that counts no bytes (apt-get download) says it is done, not "0 B".
func TestLinesReporterUncounted(t *testing.T) {
	var buf bytes.Buffer
	task := Lines(&buf).Start("apt-get download ovmf", -1)
	task.Done()
	if out := buf.String(); !strings.HasPrefix(out, "  apt-get download ovmf: done in ") {
		t.Fatalf("unexpected line: %q", out)
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 4096: "4.0 KiB", 60317768: "57.5 MiB", 5 << 30: "5.0 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestBarReporter(t *testing.T) {
	var buf bytes.Buffer
	task := Bar(&buf).Start("hash", 4)
	task.Add(4)
	task.Done()
	if !strings.Contains(buf.String(), "hash") || !strings.Contains(buf.String(), "100%") {
		t.Fatalf("bar output %q", buf.String())
	}
}

func TestNewPicksLogForNonTTY(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, ok := New(f).(*lineReporter); !ok || IsTerminal(f) || IsTerminal(&bytes.Buffer{}) {
		t.Fatal("a regular file or buffer should get the plain-lines reporter")
	}
	OrDiscard(nil).Start("x", 1).Done()
}
