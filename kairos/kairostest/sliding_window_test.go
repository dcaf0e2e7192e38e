package kairostest

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// maxInAnyWindow counts, by brute force, the most times in any half-open window
// [t, t+window) of sorted times.
func maxInAnyWindow(times []time.Duration) int {
	best := 0
	for i := range times {
		n := 0
		for j := i; j < len(times) && times[j]-times[i] < window; j++ {
			n++
		}
		best = max(best, n)
	}
	return best
}

func TestSlidingWindow(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc  string
		limit int
		gap   time.Duration // mean gap between events
	}{
		{desc: "limit 1, sparse", limit: 1, gap: 300 * time.Millisecond},
		{desc: "limit 5, bursty", limit: 5, gap: 20 * time.Millisecond},
		{desc: "limit 50, dense", limit: 50, gap: time.Millisecond},
		{desc: "limit 3, events far apart", limit: 3, gap: 2 * time.Second},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			rnd := rand.New(rand.NewPCG(1, uint64(tc.limit)))
			var s slidingWindow
			s.setLimit(tc.limit)
			var now time.Duration
			var admitted []time.Duration
			for range 5000 {
				now += time.Duration(rnd.Int64N(int64(2 * tc.gap)))
				// Reference: admit when fewer than limit admissions lie in (now-1s, now].
				inWindow := 0
				for _, a := range admitted {
					if now-a < window {
						inWindow++
					}
				}
				want := inWindow < tc.limit
				require.Equal(t, want, s.allow(now), "event at %v with %d in window", now, inWindow)
				if want {
					s.record(now)
					admitted = append(admitted, now)
				}
			}
			require.LessOrEqual(t, maxInAnyWindow(admitted), tc.limit)
		})
	}
}

func TestSlidingWindowSetLimitKeepsRecent(t *testing.T) {
	t.Parallel()
	var s slidingWindow
	s.setLimit(4)
	for i := range 4 {
		s.record(time.Duration(i) * 100 * time.Millisecond) // 0, 100, 200, 300 ms
	}
	require.False(t, s.allow(500*time.Millisecond))
	s.setLimit(2) // keeps 200 and 300 ms
	require.False(t, s.allow(1100*time.Millisecond))
	require.True(t, s.allow(1200*time.Millisecond))
	s.setLimit(6) // room again
	require.True(t, s.allow(400*time.Millisecond))
}

func TestRateMeter(t *testing.T) {
	t.Parallel()
	rnd := rand.New(rand.NewPCG(7, 7))
	var m rateMeter
	var times []time.Duration
	var now time.Duration
	for range 3000 {
		// Bursts and pauses.
		if rnd.IntN(100) == 0 {
			now += 2 * time.Second
		}
		now += time.Duration(rnd.Int64N(int64(3 * time.Millisecond)))
		m.add(now)
		times = append(times, now)
	}
	require.Equal(t, maxInAnyWindow(times), m.max)
	m.reset()
	require.Zero(t, m.max)
}

func TestQuotaCounter(t *testing.T) {
	t.Parallel()
	var q quotaCounter
	admit := func(at time.Duration) bool {
		if q.allow(at, time.Minute, 2) {
			q.count++
			return true
		}
		return false
	}
	require.True(t, admit(0))
	require.True(t, admit(time.Second))
	require.False(t, admit(59*time.Second))
	require.True(t, admit(time.Minute)) // a new period
	require.True(t, admit(time.Minute+time.Second))
	require.False(t, admit(2*time.Minute-1))
}
