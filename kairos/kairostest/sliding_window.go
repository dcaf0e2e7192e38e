package kairostest

import "time"

// window is the length of the rate limit's and the meter's sliding window.
const window = time.Second

// slidingWindow admits at most limit events in any sliding window: a ring of the last
// limit admission times. An event at t is admitted when fewer than limit were admitted,
// or the oldest of the last limit was at least one window before t, so that no half-open
// window [a, a+1s) ever holds more than limit admissions. O(1) per event, not safe for
// concurrent use (the Emulator holds winMu), times must not decrease.
type slidingWindow struct {
	limit int
	times []time.Duration
	head  int // index of the oldest admission
	n     int // admissions in the ring
}

// setLimit changes the limit, keeping the most recent admissions.
func (s *slidingWindow) setLimit(limit int) {
	if limit == s.limit {
		return
	}
	keep := min(s.n, limit)
	times := make([]time.Duration, limit)
	for i := range keep {
		times[i] = s.times[(s.head+s.n-keep+i)%s.limit]
	}
	s.limit, s.times, s.head, s.n = limit, times, 0, keep
}

// allow reports whether an event at t would be admitted.
func (s *slidingWindow) allow(t time.Duration) bool {
	return s.n < s.limit || t-s.times[s.head] >= window
}

// record counts an admitted event at t; call only after allow(t).
func (s *slidingWindow) record(t time.Duration) {
	if s.limit == 0 {
		return
	}
	if s.n < s.limit {
		s.times[(s.head+s.n)%s.limit] = t
		s.n++
		return
	}
	s.times[s.head] = t
	s.head = (s.head + 1) % s.limit
}

func (s *slidingWindow) clear() { s.head, s.n = 0, 0 }

// rateMeter finds the most events seen in any sliding window: a growing ring of the
// event times within the last window.
type rateMeter struct {
	times []time.Duration
	head  int
	n     int
	max   int
}

// add records an event at t (times must not decrease).
func (m *rateMeter) add(t time.Duration) {
	for m.n > 0 && t-m.times[m.head] >= window {
		m.head = (m.head + 1) % len(m.times)
		m.n--
	}
	if m.n == len(m.times) {
		grown := make([]time.Duration, max(64, 2*len(m.times)))
		for i := range m.n {
			grown[i] = m.times[(m.head+i)%len(m.times)]
		}
		m.times, m.head = grown, 0
	}
	m.times[(m.head+m.n)%len(m.times)] = t
	m.n++
	m.max = max(m.max, m.n)
}

func (m *rateMeter) reset() { m.head, m.n, m.max = 0, 0, 0 }

// quotaCounter counts admissions in fixed periods.
type quotaCounter struct {
	period int64 // index of the current period
	count  int
}

// allow reports whether one more admission fits in the period holding t. period 0 means
// a single endless period.
func (q *quotaCounter) allow(t, period time.Duration, total int) bool {
	idx := int64(0)
	if period > 0 {
		idx = int64(t / period)
	}
	if idx != q.period {
		q.period, q.count = idx, 0
	}
	return q.count < total
}
