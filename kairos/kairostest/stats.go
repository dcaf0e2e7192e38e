package kairostest

import (
	"sync/atomic"
)

// Stats counts the API requests an Emulator answered (admin paths excluded).
type Stats struct {
	// Total is the number of API requests answered.
	Total int64 `json:"total"`
	// ByStatus counts answers by HTTP status (JSON keys are the status as a string).
	ByStatus map[int]int64 `json:"by_status"`
	// MaxPerSecond is the most requests that arrived in any 1-second window (sliding, not
	// aligned to clock seconds), denied ones included.
	MaxPerSecond int `json:"max_per_second"`
	// MaxConcurrent is the most requests served at the same time, denied ones included.
	MaxConcurrent int64 `json:"max_concurrent"`
	// InFlight is the number of requests being served at the time of the snapshot.
	InFlight int64 `json:"in_flight"`
	// LimitDenials counts 403 answers given for a usage limit: Config.RateLimit,
	// Config.QuotaTotal or Faults.UsageLimitFor (not credential failures).
	LimitDenials int64 `json:"limit_denials"`
}

// Count returns the number of answers with the given status.
func (s Stats) Count(status int) int64 { return s.ByStatus[status] }

// statsCounters is the lock-free part of the statistics.
type statsCounters struct {
	byStatus      [600]atomic.Int64
	inFlight      atomic.Int64
	maxConcurrent atomic.Int64
	limitDenials  atomic.Int64
}

// begin records a request arriving and returns the number now in flight, itself
// included.
func (c *statsCounters) begin() int64 {
	n := c.inFlight.Add(1)
	for {
		m := c.maxConcurrent.Load()
		if n <= m || c.maxConcurrent.CompareAndSwap(m, n) {
			return n
		}
	}
}

// end records a request answered with status.
func (c *statsCounters) end(status int) {
	if status >= 0 && status < len(c.byStatus) {
		c.byStatus[status].Add(1)
	}
	c.inFlight.Add(-1)
}

func (c *statsCounters) reset() {
	for i := range c.byStatus {
		c.byStatus[i].Store(0)
	}
	c.maxConcurrent.Store(c.inFlight.Load())
	c.limitDenials.Store(0)
}

func (c *statsCounters) snapshot(maxPerSecond int) Stats {
	s := Stats{
		ByStatus:      map[int]int64{},
		MaxPerSecond:  maxPerSecond,
		MaxConcurrent: c.maxConcurrent.Load(),
		InFlight:      c.inFlight.Load(),
		LimitDenials:  c.limitDenials.Load(),
	}
	for i := range c.byStatus {
		if n := c.byStatus[i].Load(); n > 0 {
			s.ByStatus[i] = n
			s.Total += n
		}
	}
	return s
}
