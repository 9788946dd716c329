package progress

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
)

func TestLogReporter(t *testing.T) {
	var buf bytes.Buffer
	r := Log(slog.New(slog.NewTextHandler(&buf, nil)))
	task := r.Start("download x", 10)
	n, err := io.Copy(io.Discard, Reader(strings.NewReader("0123456789"), task))
	if err != nil || n != 10 {
		t.Fatal(n, err)
	}
	task.Done()
	task.Done()
	out := buf.String()
	if !strings.Contains(out, `task="download x"`) || !strings.Contains(out, "bytes=10") || strings.Count(out, "msg=done") != 1 {
		t.Fatalf("unexpected log:\n%s", out)
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
	if _, ok := New(f).(*logReporter); !ok {
		t.Fatal("regular file should get the slog reporter")
	}
	OrDiscard(nil).Start("x", 1).Done()
}
