// Package poll runs the verifier service's periodic work: reloading the
// reference directory, refreshing the collateral cache and rotating the
// signing key all call Every.
package poll

import (
	"context"
	"time"
)

// Every calls f every interval, the first time one interval from now,
// until ctx ends. A call that overruns the interval delays the next one
// (ticks are dropped, never queued up).
func Every(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// A tick and the end of ctx may be ready together, and
			// select picks either: never call f once ctx has ended.
			if ctx.Err() != nil {
				return
			}
			f()
		}
	}
}
