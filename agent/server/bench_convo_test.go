package server

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tdforge/tdforge/agent/convstore"
	"github.com/tdforge/tdforge/internal/guest/volstatus"
)

// BenchmarkConversationSave measures the latency of the writes the agent
// makes to save chats (the user's message before forwarding, the answer
// after it completes: each one committed transaction, WAL with
// synchronous=FULL) with 16 chats saving concurrently, on a real directory
// ($TMPDIR; in the guest it is the sealed volume, whose dm-integrity and
// dm-crypt layers add to it).
func BenchmarkConversationSave(b *testing.B) {
	const chats, turns = 16, 25
	f := historyFixture(b, "http://127.0.0.1:1", b.TempDir(), volstatus.Status{State: volstatus.Mounted}, nil)
	st, err := f.srv.store()
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	question := strings.Repeat("q", 200)
	answer := strings.Repeat("a", 2000)
	var all []time.Duration
	for b.Loop() {
		ids := make([]string, chats)
		for i := range ids {
			c, _, err := st.Create(ctx, benchOwner, "", "tiny:latest", nil)
			if err != nil {
				b.Fatal(err)
			}
			ids[i] = c.ID
		}
		lat := make([][]time.Duration, chats)
		var wg sync.WaitGroup
		for i := range chats {
			wg.Go(func() {
				for t := range turns {
					for _, m := range []convstore.Message{{Role: "user", Content: fmt.Sprint(t, question)}, {Role: "assistant", Content: answer}} {
						start := time.Now()
						if _, err := st.Append(ctx, benchOwner, ids[i], "tiny:latest", m); err != nil {
							b.Error(err)
							return
						}
						lat[i] = append(lat[i], time.Since(start))
					}
				}
			})
		}
		wg.Wait()
		for _, l := range lat {
			all = append(all, l...)
		}
	}
	b.ReportMetric(float64(percentile(all, 0.50).Microseconds())/1000, "save-p50-ms")
	b.ReportMetric(float64(percentile(all, 0.99).Microseconds())/1000, "save-p99-ms")
	b.ReportMetric(float64(len(all))/b.Elapsed().Seconds(), "saves/s")
}
