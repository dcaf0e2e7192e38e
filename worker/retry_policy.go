package worker

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// RetryPolicy says how long a task waits before its next attempt after a transient
// failure (5xx, 429, transport or storage errors): exponential backoff with full jitter,
// never shorter than a Retry-After the API sent.
type RetryPolicy struct {
	Base        time.Duration // first backoff ceiling; default 1 s
	Factor      float64       // growth per attempt; default 2
	Cap         time.Duration // largest backoff ceiling; default 10 min
	MaxAttempts int           // attempts before the task is archived as failed; default 10
}

func (p *RetryPolicy) applyDefaults() {
	if p.Base == 0 {
		p.Base = time.Second
	}
	if p.Factor == 0 {
		p.Factor = 2
	}
	if p.Cap == 0 {
		p.Cap = 10 * time.Minute
	}
	if p.MaxAttempts == 0 {
		p.MaxAttempts = 10
	}
}

func (p *RetryPolicy) validate() error {
	switch {
	case p.Base <= 0:
		return fmt.Errorf("retry policy: base must be positive, got %v", p.Base)
	case p.Factor < 1:
		return fmt.Errorf("retry policy: factor must be at least 1, got %v", p.Factor)
	case p.Cap < p.Base:
		return fmt.Errorf("retry policy: cap %v is below base %v", p.Cap, p.Base)
	case p.MaxAttempts < 1:
		return fmt.Errorf("retry policy: max attempts must be at least 1, got %d", p.MaxAttempts)
	}
	return nil
}

// Ceiling is the largest backoff after the n-th failed attempt (n from 0):
// min(Cap, Base × Factorⁿ).
func (p RetryPolicy) Ceiling(n int) time.Duration {
	c := float64(p.Base) * math.Pow(p.Factor, float64(n))
	if c > float64(p.Cap) || math.IsInf(c, 0) || math.IsNaN(c) {
		return p.Cap
	}
	return time.Duration(c)
}

// Delay is the wait after the n-th failed attempt: uniform in [0, Ceiling(n)] (full
// jitter), or retryAfter when that is longer.
func (p RetryPolicy) Delay(n int, retryAfter time.Duration) time.Duration {
	d := time.Duration(rand.Int64N(int64(p.Ceiling(n)) + 1))
	return max(d, retryAfter)
}
