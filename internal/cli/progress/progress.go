// Package progress reports the advance of long build steps (downloads,
// hashing, image writing): a progress bar on a terminal, one plain line per
// finished task otherwise.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Reporter starts tasks. Implementations are safe for concurrent use.
type Reporter interface {
	// Start begins a task named name; total is its size in bytes, or -1
	// when unknown.
	Start(name string, total int64) Task
}

// Task is one running step.
type Task interface {
	Add(n int64) // n more bytes are done
	Done()       // the step finished (idempotent)
}

// New returns a bar Reporter when w is a terminal and a Lines Reporter
// otherwise.
func New(w io.Writer) Reporter {
	if IsTerminal(w) {
		return Bar(w)
	}
	return Lines(w)
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Discard is a Reporter that reports nothing.
var Discard Reporter = discard{}

type discard struct{}

func (discard) Start(string, int64) Task { return discardTask{} }

type discardTask struct{}

func (discardTask) Add(int64) {}
func (discardTask) Done()     {}

// OrDiscard returns r, or Discard when r is nil.
func OrDiscard(r Reporter) Reporter {
	if r == nil {
		return Discard
	}
	return r
}

// Bar returns a Reporter drawing progressbar/v3 bars on w.
func Bar(w io.Writer) Reporter { return &barReporter{w: w} }

type barReporter struct{ w io.Writer }

func (b *barReporter) Start(name string, total int64) Task {
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(b.w),
		progressbar.OptionSetDescription(name),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionOnCompletion(func() { io.WriteString(b.w, "\n") }),
	)
	return &barTask{bar: bar}
}

type barTask struct {
	bar  *progressbar.ProgressBar
	once sync.Once
}

func (t *barTask) Add(n int64) { t.bar.Add64(n) }
func (t *barTask) Done()       { t.once.Do(func() { t.bar.Finish() }) }

// Lines returns a Reporter writing one plain line to w when a task ends:
// "  hash OVMF.fd: 4.0 MiB in 0.1s".
func Lines(w io.Writer) Reporter { return &lineReporter{w: w} }

type lineReporter struct {
	mu sync.Mutex // one line at a time
	w  io.Writer
}

func (r *lineReporter) Start(name string, total int64) Task {
	return &lineTask{r: r, name: name, start: time.Now()}
}

type lineTask struct {
	r     *lineReporter
	name  string
	start time.Time
	mu    sync.Mutex
	n     int64
	done  bool
}

func (t *lineTask) Add(n int64) {
	t.mu.Lock()
	t.n += n
	t.mu.Unlock()
}

func (t *lineTask) Done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return
	}
	t.done = true
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	took := time.Since(t.start).Round(100 * time.Millisecond)
	if t.n == 0 { // a task that counts no bytes (a subprocess download)
		fmt.Fprintf(t.r.w, "  %s: done in %s\n", t.name, took)
		return
	}
	fmt.Fprintf(t.r.w, "  %s: %s in %s\n", t.name, Bytes(t.n), took)
}

// Bytes formats a size for people: "512 B", "4.0 KiB", "57.5 MiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// Reader wraps r so that every byte read is added to t.
func Reader(r io.Reader, t Task) io.Reader { return &reader{r: r, t: t} }

type reader struct {
	r io.Reader
	t Task
}

func (r *reader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.t.Add(int64(n))
	}
	return n, err
}
