package worker

import "context"

// WrapPause replaces the worker's queue pause with wrap(pause), so that a test can act
// just before or after it. Call it before Start.
func WrapPause(w *Worker, wrap func(pause func(ctx context.Context, reason string) error) func(ctx context.Context, reason string) error) {
	w.pause = wrap(w.pause)
}
