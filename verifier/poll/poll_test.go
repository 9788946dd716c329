package poll

import (
	"context"
	"testing"
	"time"
)

// Every calls f on each tick and returns once ctx ends, without a last call.
func TestEvery(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := make(chan int, 10)
	n := 0
	done := make(chan struct{})
	go func() {
		Every(ctx, time.Millisecond, func() {
			n++
			calls <- n
			if n == 3 {
				cancel()
			}
		})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Every did not return after its context ended")
	}
	if n != 3 || len(calls) != 3 {
		t.Fatalf("f ran %d times after the context ended at the third", n)
	}
}

// A tick pending when f cancels the context (f overran the interval) does
// not call f again: select would pick either case at random. Before the fix
// this failed in about half of the rounds.
func TestEveryNoCallAfterCancelWithTickPending(t *testing.T) {
	for i := 0; i < 40; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		n := 0
		Every(ctx, time.Millisecond, func() {
			n++
			cancel()
			time.Sleep(3 * time.Millisecond) // a tick is pending on return
		})
		if n != 1 {
			t.Fatalf("round %d: f ran %d times, the context ended during the first", i, n)
		}
	}
}
