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
