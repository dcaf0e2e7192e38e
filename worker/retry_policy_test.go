package worker

import (
	"testing"
	"time"
)

func TestRetryPolicy(t *testing.T) {
	t.Parallel()
	p := RetryPolicy{}
	p.applyDefaults()
	if err := p.validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		desc string
		n    int
		want time.Duration
	}{
		{desc: "first retry", n: 0, want: time.Second},
		{desc: "third retry", n: 2, want: 4 * time.Second},
		{desc: "capped", n: 12, want: 10 * time.Minute},
		{desc: "far past the cap", n: 5000, want: 10 * time.Minute},
	}
	for _, tt := range tests {
		if got := p.Ceiling(tt.n); got != tt.want {
			t.Errorf("%s: Ceiling(%d) = %v, want %v", tt.desc, tt.n, got, tt.want)
		}
		var sum time.Duration
		for range 2000 {
			d := p.Delay(tt.n, 0)
			if d < 0 || d > tt.want {
				t.Fatalf("%s: Delay(%d) = %v outside [0, %v]", tt.desc, tt.n, d, tt.want)
			}
			sum += d
		}
		// Full jitter: the mean is about half the ceiling.
		if mean := sum / 2000; mean < tt.want*4/10 || mean > tt.want*6/10 {
			t.Errorf("%s: mean delay %v, want about %v", tt.desc, mean, tt.want/2)
		}
	}
	if d := p.Delay(0, 90*time.Second); d != 90*time.Second {
		t.Errorf("Retry-After longer than the backoff: got %v, want 90s", d)
	}
	for _, bad := range []RetryPolicy{{Base: -1}, {Factor: 0.5}, {Base: time.Hour, Cap: time.Second}, {MaxAttempts: -1}} {
		bad.applyDefaults()
		if bad.validate() == nil {
			t.Errorf("validate(%+v) = nil, want an error", bad)
		}
	}
}
