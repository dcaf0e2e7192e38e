package worker

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// BudgetState is a snapshot of the global API budget as Redis holds it, for `livenessq
// status` and metrics. Times are by the Redis server's clock; zero times mean "none".
type BudgetState struct {
	// Now is the Redis server's time when the snapshot was taken.
	Now time.Time `json:"now"`
	// Configured reports whether a budget has published its configuration (the fields
	// Rate to MaxInFlight and the quota limit); false before any worker has run.
	Configured bool `json:"configured"`

	Rate     float64       `json:"rate"`     // configured usage limit, calls/s; 0 = none
	Window   time.Duration `json:"window"`   // the window Rate is counted over
	Burst    int           `json:"burst"`    // calls that may start back to back
	Headroom time.Duration `json:"headroom"` // timing margin kept in each window
	// PaceRate is the rate the budget admits calls at now, in calls/s: Rate less the
	// burst and headroom allowance, lowered by quota pacing. 0 when nothing limits the
	// rate, and also when the quota is used up (then QuotaLeft is 0).
	PaceRate float64 `json:"pace_rate"`

	InFlight    int `json:"in_flight"`     // leases held (unexpired)
	MaxInFlight int `json:"max_in_flight"` // cap; 0 = none

	// Cooling reports an open usage-limit cooldown: either running until
	// CooldownUntil, or over and waiting for a probe call to succeed.
	Cooling        bool          `json:"cooling"`
	CooldownUntil  time.Time     `json:"cooldown_until"`
	CooldownLength time.Duration `json:"cooldown_length"` // the current cooldown's length (doubles per failed probe)
	CooldownStreak int           `json:"cooldown_streak"` // cooldowns in this episode: 1 after the first 403, +1 per failed probe
	Probing        bool          `json:"probing"`         // a probe call is running
	LimitedSince   time.Time     `json:"limited_since"`   // the episode's first 403
	LastLimitedAt  time.Time     `json:"last_limited_at"` // its latest 403

	Paused      bool      `json:"paused"` // persistent 403s paused the queue
	PauseReason string    `json:"pause_reason,omitempty"`
	PausedAt    time.Time `json:"paused_at"`

	Quota        int64     `json:"quota"` // calls per period; 0 = no quota
	QuotaUsed    int64     `json:"quota_used"`
	QuotaLeft    int64     `json:"quota_left"`
	QuotaResetAt time.Time `json:"quota_reset_at"`
}

// State returns a snapshot of the budget, with this process's configuration. It only
// reads. Errors wrap ErrBudgetUnavailable when Redis cannot be reached.
func (b *Budget) State(ctx context.Context) (BudgetState, error) {
	c := b.cfg
	cfg := map[string]string{
		"rate":            strconv.FormatFloat(c.Rate, 'g', -1, 64),
		"window_us":       strconv.FormatInt(c.Window.Microseconds(), 10),
		"burst":           strconv.Itoa(c.Burst),
		"headroom_us":     strconv.FormatInt(c.Headroom.Microseconds(), 10),
		"max_inflight":    strconv.Itoa(c.MaxInFlight),
		"quota":           strconv.FormatInt(c.Quota, 10),
		"quota_period_us": strconv.FormatInt(c.QuotaPeriod.Microseconds(), 10),
		"quota_anchor_us": strconv.FormatInt(c.QuotaResetAt.UnixMicro(), 10),
	}
	return budgetReadState(ctx, b.rdb, cfg)
}

// ReadBudgetState returns a snapshot of the global API budget held in rdb, with the
// configuration the workers last published (for `livenessq status`, which has none of
// its own). It only reads. Errors wrap ErrBudgetUnavailable when Redis cannot be reached.
func ReadBudgetState(ctx context.Context, rdb redis.UniversalClient) (BudgetState, error) {
	return budgetReadState(ctx, rdb, nil)
}

// ResumeBudget forgets the current usage-limit episode: it removes the pause record, the
// cooldown and the probe lock, so the next call tests the API afresh (and a new 403
// starts a new episode with the base cooldown). `livenessq resume` calls it when it
// resumes the queue.
func ResumeBudget(ctx context.Context, rdb redis.UniversalClient) error {
	if err := rdb.Del(ctx, budgetKeyPaused, budgetKeyCooldown, budgetKeyProbe).Err(); err != nil {
		return fmt.Errorf("budget: resume: %w: %w", ErrBudgetUnavailable, err)
	}
	// A refusal of a call admitted before this resume is stale (it was in flight while
	// the key was being fixed): it must not pause the queue again.
	if err := authBarrierScript.Run(ctx, rdb, []string{budgetKeyAuthBarrier, budgetKeyAuthResumed}).Err(); err != nil {
		return fmt.Errorf("budget: resume: %w: %w", ErrBudgetUnavailable, err)
	}
	return nil
}

// budgetReadState reads the state; cfg, when not nil, replaces the published config.
func budgetReadState(ctx context.Context, rdb redis.UniversalClient, cfg map[string]string) (BudgetState, error) {
	v, err := budgetStateScript.Run(ctx, rdb, []string{
		budgetKeyConfig, budgetKeyLeases, budgetKeyCooldown, budgetKeyProbe, budgetKeyPaused, budgetKeyQuota,
	}).Slice()
	if err != nil {
		return BudgetState{}, fmt.Errorf("budget: read state: %w: %w", ErrBudgetUnavailable, err)
	}
	if len(v) != 7 {
		return BudgetState{}, fmt.Errorf("budget: read state: script returned %d values", len(v))
	}
	var p budgetParser
	nowUS := p.float(v[0])
	s := BudgetState{Now: budgetTime(nowUS)}
	if cfg == nil {
		cfg = budgetMap(v[1])
	}
	cooldown, paused, quota := budgetMap(v[3]), budgetMap(v[5]), budgetMap(v[6])
	if p.err != nil {
		return BudgetState{}, fmt.Errorf("budget: read state: %w", p.err)
	}

	s.Configured = len(cfg) > 0
	s.Rate = p.float(cfg["rate"])
	s.Window = budgetDur(p.float(cfg["window_us"]))
	s.Burst = int(p.float(cfg["burst"]))
	s.Headroom = budgetDur(p.float(cfg["headroom_us"]))
	s.MaxInFlight = int(p.float(cfg["max_inflight"]))
	s.Quota = int64(p.float(cfg["quota"]))
	n, _ := v[2].(int64)
	s.InFlight = int(n)

	if u, ok := cooldown["until"]; ok {
		s.Cooling = true
		s.CooldownUntil = budgetTime(p.float(u))
		s.CooldownLength = budgetDur(p.float(cooldown["length"]))
		s.CooldownStreak = int(p.float(cooldown["streak"]))
		s.LimitedSince = budgetTime(p.float(cooldown["since"]))
		s.LastLimitedAt = budgetTime(p.float(cooldown["last"]))
	}
	probing, _ := v[4].(int64)
	s.Probing = probing == 1
	if len(paused) > 0 {
		s.Paused = true
		s.PauseReason = paused["reason"]
		s.PausedAt = budgetTime(p.float(paused["at"]))
	}

	used := int64(0)
	var toReset time.Duration
	if s.Quota > 0 {
		period, anchor := p.float(cfg["quota_period_us"]), p.float(cfg["quota_anchor_us"])
		if period > 0 {
			end := anchor + (math.Floor((nowUS-anchor)/period)+1)*period
			if e, ok := quota["period_end"]; ok && p.float(e) == end {
				used = int64(p.float(quota["used"]))
			}
			s.QuotaResetAt = budgetTime(end)
			toReset = budgetDur(end - nowUS)
		}
		s.QuotaUsed, s.QuotaLeft = used, max(0, s.Quota-used)
	}
	if p.err != nil {
		return BudgetState{}, fmt.Errorf("budget: read state: %w", p.err)
	}
	if s.Configured && s.Window > 0 {
		pace := budgetPacing{Rate: s.Rate, Window: s.Window, Burst: max(1, s.Burst), Headroom: s.Headroom, Quota: s.Quota}.pace(used, toReset)
		if !math.IsInf(pace, 0) {
			s.PaceRate = pace
		}
	}
	return s, nil
}

// budgetParser parses Redis strings as numbers, keeping the first error.
type budgetParser struct{ err error }

func (p *budgetParser) float(v any) float64 {
	var s string
	switch x := v.(type) {
	case nil:
		return 0
	case string:
		s = x
	case int64:
		return float64(x)
	default:
		s = fmt.Sprint(x)
	}
	if s == "" {
		return 0
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("bad number %q", s)
	}
	return f
}

// budgetMap turns an HGETALL reply (a flat list) into a map.
func budgetMap(v any) map[string]string {
	l, _ := v.([]any)
	m := make(map[string]string, len(l)/2)
	for i := 0; i+1 < len(l); i += 2 {
		k, _ := l[i].(string)
		val, _ := l[i+1].(string)
		m[k] = val
	}
	return m
}

// budgetTime converts µs since the epoch to a time; 0 is the zero time.
func budgetTime(us float64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(int64(math.Round(us)))
}

func budgetDur(us float64) time.Duration { return time.Duration(math.Round(us)) * time.Microsecond }
