// Package progress reports the advance of long build steps (downloads,
// hashing, image writing): a progress bar on a terminal, structured log lines
// otherwise.
package progress

import (
	"io"
	"log/slog"
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

// New returns a bar Reporter when w is a terminal and a quiet slog Reporter
// (logging to w) otherwise.
func New(w *os.File) Reporter {
	if w != nil && term.IsTerminal(int(w.Fd())) {
		return Bar(w)
	}
	return Log(slog.New(slog.NewTextHandler(w, nil)))
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

// Log returns a quiet Reporter writing one structured line when a task
// starts and one when it ends (with bytes and duration).
func Log(l *slog.Logger) Reporter { return &logReporter{l: l} }

type logReporter struct{ l *slog.Logger }

func (r *logReporter) Start(name string, total int64) Task {
	r.l.Info("start", "task", name, "total_bytes", total)
	return &logTask{l: r.l, name: name, total: total, start: time.Now()}
}

type logTask struct {
	l     *slog.Logger
	name  string
	total int64
	start time.Time
	mu    sync.Mutex
	n     int64
	done  bool
}

func (t *logTask) Add(n int64) {
	t.mu.Lock()
	t.n += n
	t.mu.Unlock()
}

func (t *logTask) Done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return
	}
	t.done = true
	t.l.Info("done", "task", t.name, "bytes", t.n, "seconds", time.Since(t.start).Round(time.Millisecond).Seconds())
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
