//go:build !linux

package worker

import "time"

// sleepPrecisely sleeps d.
func sleepPrecisely(d time.Duration) { time.Sleep(d) }
