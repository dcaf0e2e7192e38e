package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// ErrBudgetUnavailable is returned (wrapped) by [Budget.Acquire] and [Lease.Release] when
// Redis cannot be reached. The budget then admits nothing: no budget, no API call.
var ErrBudgetUnavailable = errors.New("worker: API budget unavailable (Redis unreachable); no call made")

// Outcome is what an API call made under a [Lease] came to, as far as the budget cares.
// The handler maps the client's errors onto it.
type Outcome int

// The outcomes of a call.
const (
	// OutcomeOther is any other end: a 5xx, a network error, a rejected image, or no
	// call made at all. It frees the slot and leaves the cooldown as it is. It is the
	// zero value.
	OutcomeOther Outcome = iota
	// OutcomeOK is an answered call (the API did its work). On the probe call it
	// closes the usage-limit cooldown for every process.
	OutcomeOK
	// OutcomeUsageLimited is a 403 (usage limit). It opens the shared cooldown, or,
	// on the probe call, doubles it.
	OutcomeUsageLimited
)

// String returns "ok", "usage_limited" or "other".
func (o Outcome) String() string {
	switch o {
	case OutcomeOK:
		return "ok"
	case OutcomeUsageLimited:
		return "usage_limited"
	default:
		return "other"
	}
}

// BudgetConfig configures a [Budget]. Every worker process sharing one API account
// should use the same values: the rate, cap and quota are enforced in Redis from the
// arguments each caller passes, and `livenessq status` shows the last written ones.
type BudgetConfig struct {
	// Redis holds the budget; required. Any client works, Redis Cluster included: all
	// keys share the hash tag {budget}.
	Redis redis.UniversalClient

	// Rate is the API's usage limit in calls per second across all workers; 0 (the
	// default) means no rate limit. Calls leave at most N = ⌊Rate×Window⌋ (at least 1)
	// to any window of length Window + Headroom, spaced at 1/Rate by a GCRA with Burst
	// (a call that leaves late, from a busy host, may fall closer to the next).
	//
	// That holds at the API, whose clock counts a call when it arrives, as long as the
	// trips to it differ by less than Headroom. Redis keeps the moment each of the last
	// N calls left: a call whose caller woke late is re-recorded at the moment it
	// really leaves, so lateness costs its own delay, not a turn. The steady rate is
	// PaceRate = N / (Window + Headroom) per second (198.4/s for Rate 200 with the
	// defaults).
	Rate float64
	// Window is the window the API's limit is counted over; default 1 s.
	Window time.Duration
	// Burst is how many calls may start back to back after a quiet spell; default 1
	// (calls evenly spaced at 1/Rate or more). A burst never takes a window over N.
	// Rate×Window must exceed Burst−1.
	Burst int
	// Headroom is the margin for the trip to the API: how much the delays between a
	// call leaving and the API counting it may differ from call to call (network
	// jitter, a busy machine) without a window going over the limit. It costs
	// Headroom/Window of the rate (0.8% by default). A caller is granted its turn
	// shortly ahead and sleeps until it, so the round trip to Redis is not part of that
	// delay. One that wakes up to Headroom/2 late goes, and [Lease.Sent] tells Redis
	// when it left; later than that, it first moves its turn in Redis to a moment
	// later and leaves then (one more round trip, for that call only). Default 8 ms.
	Headroom time.Duration

	// MaxInFlight caps the API calls in flight across all processes; 0 (the default)
	// means no cap.
	//
	// With no Rate, MaxInFlight or Quota, only the cooldown can refuse a call: Acquire
	// then asks Redis whether one is open at most every 50 ms per process rather than
	// running the script for each call, and leases are not recorded in Redis. A 403
	// still stops every process within 50 ms, and a process that cannot reach Redis
	// stops calling within 50 ms.
	MaxInFlight int
	// LeaseTTL is how long a slot stays taken without a heartbeat: a process that dies
	// holding leases gives their slots back within LeaseTTL. Held leases are renewed
	// every LeaseTTL/3 while [Budget.Start] runs. Default 10 s.
	LeaseTTL time.Duration

	// Cooldown is how long every process stops calling the API after the first 403;
	// default 60 s. Each 403 on the probe call that follows doubles it.
	Cooldown time.Duration
	// CooldownMax caps the doubled cooldown; default 15 min.
	CooldownMax time.Duration
	// PauseAfter is how long 403s may persist (from the first 403 to a probe that
	// still gets one) before the budget records a pause reason in Redis and calls
	// Pause, once across all processes; default 30 min.
	PauseAfter time.Duration
	// Pause pauses the queue for every worker; it is called with the reason once per
	// usage-limit episode. If it returns an error the pause record is removed so that
	// a later 403 tries again. Nil: the reason is recorded and logged only.
	Pause func(ctx context.Context, reason string) error

	// Quota, when positive, is the number of calls allowed per QuotaPeriod; the
	// budget counts admissions in Redis and paces at (quota left) / (time to the
	// reset), never above PaceRate, so that a batch spreads over the period instead
	// of exhausting it. Default 0: no quota.
	Quota int64
	// QuotaPeriod is the length of a quota period; default 24 h.
	QuotaPeriod time.Duration
	// QuotaResetAt is any instant at which the quota resets; it resets again every
	// QuotaPeriod before and after. Default (zero): midnight UTC.
	QuotaResetAt time.Time

	// Jitter bounds the random extra wait a caller adds when it is refused, so that
	// processes do not retry in lockstep; default 5 ms, never more than half the wait.
	// After a rate refusal it is also at most a quarter of the 20 ms a turn is granted
	// ahead: the caller asks again no later than 15 ms before the turn it waited for,
	// which still leaves on time.
	Jitter time.Duration

	// Logger receives cooldown, pause and lost-lease events; default: no logging.
	Logger zerolog.Logger
}

// Budget defaults.
const (
	budgetDefaultWindow      = time.Second
	budgetDefaultBurst       = 1
	budgetDefaultHeadroom    = 8 * time.Millisecond
	budgetDefaultLeaseTTL    = 10 * time.Second
	budgetDefaultCooldown    = 60 * time.Second
	budgetDefaultCooldownMax = 15 * time.Minute
	budgetDefaultPauseAfter  = 30 * time.Minute
	budgetDefaultQuotaPeriod = 24 * time.Hour
	budgetDefaultJitter      = 5 * time.Millisecond

	budgetReserveAhead   = 20 * time.Millisecond  // how far ahead of its turn a caller may be granted it
	budgetLateMove       = time.Millisecond       // a caller later than this (or Headroom/4) re-records its turn
	budgetMaxLate        = 250 * time.Millisecond // a turn later than this is given up, not moved
	budgetMoveTries      = 3                      // moves of one turn before it is given up
	budgetClearFor       = 50 * time.Millisecond  // how long an unconstrained budget trusts "no cooldown"
	budgetPreciseSleep   = 2 * time.Millisecond   // the end of a wait for a turn slept with sleepPrecisely
	budgetConcPoll       = 2 * time.Millisecond   // re-check interval while MaxInFlight leases are held
	budgetProbePoll      = 25 * time.Millisecond  // re-check interval while another caller probes
	budgetMaxSleep       = 250 * time.Millisecond
	budgetEvalTimeout    = 5 * time.Second
	budgetReleaseTimeout = 5 * time.Second
)

func (c *BudgetConfig) applyDefaults() {
	if c.Window == 0 {
		c.Window = budgetDefaultWindow
	}
	if c.Burst == 0 {
		c.Burst = budgetDefaultBurst
	}
	if c.Headroom == 0 {
		c.Headroom = budgetDefaultHeadroom
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = budgetDefaultLeaseTTL
	}
	if c.Cooldown == 0 {
		c.Cooldown = budgetDefaultCooldown
	}
	if c.CooldownMax == 0 {
		c.CooldownMax = max(budgetDefaultCooldownMax, c.Cooldown)
	}
	if c.PauseAfter == 0 {
		c.PauseAfter = budgetDefaultPauseAfter
	}
	if c.QuotaPeriod == 0 {
		c.QuotaPeriod = budgetDefaultQuotaPeriod
	}
	if c.QuotaResetAt.IsZero() {
		c.QuotaResetAt = time.Unix(0, 0)
	}
	if c.Jitter == 0 {
		c.Jitter = budgetDefaultJitter
	}
}

func (c *BudgetConfig) validate() error {
	switch {
	case c.Redis == nil:
		return errors.New("budget: Redis is required")
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return fmt.Errorf("budget: Rate %v must be a finite number ≥ 0", c.Rate)
	case c.Window < time.Millisecond:
		return fmt.Errorf("budget: Window %v must be at least 1ms", c.Window)
	case c.Burst < 1:
		return fmt.Errorf("budget: Burst %d must be ≥ 1", c.Burst)
	case c.Headroom < 0:
		return fmt.Errorf("budget: Headroom %v must be ≥ 0", c.Headroom)
	case c.Rate > 0 && c.Rate*c.Window.Seconds() <= float64(c.Burst-1):
		return fmt.Errorf("budget: Burst %d too large for Rate %v per %v: Rate×Window must exceed Burst−1", c.Burst, c.Rate, c.Window)
	case c.MaxInFlight < 0:
		return fmt.Errorf("budget: MaxInFlight %d must be ≥ 0", c.MaxInFlight)
	case c.LeaseTTL < 3*time.Millisecond:
		return fmt.Errorf("budget: LeaseTTL %v must be at least 3ms", c.LeaseTTL)
	case c.Cooldown < time.Millisecond:
		return fmt.Errorf("budget: Cooldown %v must be at least 1ms", c.Cooldown)
	case c.CooldownMax < c.Cooldown:
		return fmt.Errorf("budget: CooldownMax %v is shorter than Cooldown %v", c.CooldownMax, c.Cooldown)
	case c.PauseAfter < 0:
		return fmt.Errorf("budget: PauseAfter %v must be ≥ 0", c.PauseAfter)
	case c.Quota < 0:
		return fmt.Errorf("budget: Quota %d must be ≥ 0", c.Quota)
	case c.QuotaPeriod < time.Millisecond:
		return fmt.Errorf("budget: QuotaPeriod %v must be at least 1ms", c.QuotaPeriod)
	case c.Jitter < 0:
		return fmt.Errorf("budget: Jitter %v must be ≥ 0", c.Jitter)
	}
	return nil
}

// budgetPacing is the part of the configuration that decides the admission rate.
type budgetPacing struct {
	Rate     float64
	Window   time.Duration
	Burst    int
	Headroom time.Duration
	Quota    int64
}

// window returns the send log's terms: at most n calls leave in any span. n is
// ⌊Rate×Window⌋, at least 1; span is Window (or, below one call per Window, 1/Rate)
// plus Headroom. n is 0 when Rate is 0 (no log).
func (p budgetPacing) window() (n int64, span time.Duration) {
	if p.Rate == 0 {
		return 0, 0
	}
	n = max(1, int64(math.Floor(p.Rate*p.Window.Seconds()+1e-9)))
	w := max(p.Window, time.Duration(float64(n)/p.Rate*float64(time.Second)))
	return n, w + p.Headroom
}

// base returns the steady admission rate in calls per second without quota pacing:
// min(Rate, n/span) (see window), or +Inf when Rate is 0 (no limit).
func (p budgetPacing) base() float64 {
	n, span := p.window()
	if n == 0 {
		return math.Inf(1)
	}
	return math.Min(p.Rate, float64(n)/span.Seconds())
}

// pace returns the admission rate in calls per second given the quota used so far and
// the time to the quota's reset: min(base, (Quota−used)/toReset); 0 when the quota is
// used up; +Inf when nothing limits the rate. budgetAcquireScript computes the same.
func (p budgetPacing) pace(used int64, toReset time.Duration) float64 {
	base := p.base()
	if p.Quota <= 0 {
		return base
	}
	left := p.Quota - used
	if left <= 0 {
		return 0
	}
	if toReset <= 0 {
		return base
	}
	return math.Min(base, float64(left)/toReset.Seconds())
}

// tolerance returns how far ahead of its turn at Rate a call may go: the burst
// allowance.
func (p budgetPacing) tolerance() time.Duration {
	if p.Rate == 0 {
		return 0
	}
	return time.Duration(float64(p.Burst-1) / p.Rate * float64(time.Second))
}

// BudgetStats counts what a [Budget] did in this process; the worker exports them as
// metrics. All fields are safe to read at any time.
type BudgetStats struct {
	Admitted          atomic.Int64 // leases granted
	Probes            atomic.Int64 // of which probe calls after a cooldown
	WaitNanos         atomic.Int64 // total time callers spent in Acquire, ns
	DeniedRate        atomic.Int64 // attempts refused by the rate limit (each retry counts)
	DeniedConcurrency atomic.Int64 // attempts refused because MaxInFlight leases were held
	DeniedCooldown    atomic.Int64 // attempts refused by an open cooldown or a running probe
	DeniedQuota       atomic.Int64 // attempts refused because the period's quota was used up
	Moved             atomic.Int64 // turns re-recorded at the moment the call left (it left late)
	Late              atomic.Int64 // turns given up: woken too late to re-record them safely
	UsageLimited      atomic.Int64 // leases released with OutcomeUsageLimited
	CooldownsOpened   atomic.Int64 // cooldowns this process opened or doubled
	CooldownsClosed   atomic.Int64 // cooldowns this process's probe closed
	Pauses            atomic.Int64 // times this process recorded a pause and called Pause
	Unavailable       atomic.Int64 // Acquire/Release calls that failed because Redis was unreachable
	LeasesLost        atomic.Int64 // held leases found expired by the heartbeat
}

// Budget is the global API budget shared, through Redis, by every worker process: a
// rate limit, a cap on calls in flight, a usage-limit cooldown with a single probe, and
// optional quota pacing. Every API call is made between [Budget.Acquire] and
// [Lease.Release]. A Budget is safe for concurrent use; the only state it keeps in the
// process is the list of leases it holds.
type Budget struct {
	cfg      BudgetConfig
	rdb      redis.UniversalClient
	log      zerolog.Logger
	pacing   budgetPacing
	tolUS    int64
	logN     int64 // the send log: at most logN calls in any logSpan; 0 = no log
	logSpan  time.Duration
	instance string
	seq      atomic.Uint64
	stats    BudgetStats
	turn     chan struct{} // one caller per process talks to Redis at a time; the others queue here

	// This host's clock minus Redis's, as learnClock estimates it: turns are granted by
	// Redis's clock and waited for by this one.
	clockOffset atomic.Int64 // ns
	clockKnown  atomic.Bool

	cooldownUntil atomic.Int64 // last seen end of the cooldown, Unix ns, local clock; 0 = none

	// An unconstrained budget (no rate, cap or quota) admits calls without Redis while
	// a recent check found no cooldown; clearMu serializes the checks.
	unconstrained bool
	clear         atomic.Pointer[budgetClear]
	clearMu       sync.Mutex

	mu      sync.Mutex
	held    map[string]*Lease
	started bool
	stopped bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// NewBudget applies the defaults to cfg, validates it and returns a Budget. It does not
// touch Redis; call [Budget.Start] to renew leases in the background.
func NewBudget(cfg BudgetConfig) (*Budget, error) {
	cfg.applyDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var inst [6]byte
	if _, err := rand.Read(inst[:]); err != nil {
		return nil, fmt.Errorf("budget: lease ids: %w", err)
	}
	p := budgetPacing{Rate: cfg.Rate, Window: cfg.Window, Burst: cfg.Burst, Headroom: cfg.Headroom, Quota: cfg.Quota}
	b := &Budget{
		cfg:      cfg,
		rdb:      cfg.Redis,
		log:      cfg.Logger.With().Str("component", "budget").Logger(),
		pacing:   p,
		tolUS:    p.tolerance().Microseconds(),
		instance: hex.EncodeToString(inst[:]),
		turn:     make(chan struct{}, 1),
		held:     make(map[string]*Lease),
	}
	b.logN, b.logSpan = p.window()
	b.unconstrained = cfg.Rate == 0 && cfg.MaxInFlight == 0 && cfg.Quota == 0
	return b, nil
}

// Stats returns the budget's counters for this process.
func (b *Budget) Stats() *BudgetStats { return &b.stats }

// Start begins renewing held leases every LeaseTTL/3 and publishing the configuration
// for `livenessq status`, until [Budget.Shutdown]. Without Start, leases are not renewed
// and expire LeaseTTL after they were granted. Starting twice is a no-op; starting after
// Shutdown is an error.
func (b *Budget) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return errors.New("budget: start after shutdown")
	}
	if b.started {
		return nil
	}
	b.started = true
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel, b.done = cancel, make(chan struct{})
	go b.heartbeat(hctx)
	return nil
}

// Shutdown stops the heartbeat and waits for it, or for ctx. It does not release held
// leases (their calls may still be running): they expire within LeaseTTL. Call it once
// the handlers are done. Safe to call twice, or before Start.
func (b *Budget) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	if b.stopped || !b.started {
		b.stopped = true
		b.mu.Unlock()
		return nil
	}
	b.stopped = true
	cancel, done := b.cancel, b.done
	b.mu.Unlock()
	cancel()
	st := &b.stats
	b.log.Info().Int64("admitted", st.Admitted.Load()).Int64("moved", st.Moved.Load()).Int64("late", st.Late.Load()).
		Int64("denied_rate", st.DeniedRate.Load()).Int64("denied_concurrency", st.DeniedConcurrency.Load()).
		Int64("denied_cooldown", st.DeniedCooldown.Load()).Int64("usage_limited", st.UsageLimited.Load()).
		Dur("wait", time.Duration(st.WaitNanos.Load())).Msg("API budget: this process's totals")
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("budget: shutdown: %w", ctx.Err())
	}
}

func (b *Budget) heartbeat(ctx context.Context) {
	defer close(b.done)
	b.writeConfig(ctx)
	tick := time.NewTicker(b.cfg.LeaseTTL / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			b.renew(ctx)
			b.writeConfig(ctx)
		}
	}
}

// renew extends the held leases (and the probe lock); a lease found gone is dropped.
func (b *Budget) renew(ctx context.Context) {
	b.mu.Lock()
	ids := make([]any, 0, len(b.held)+2)
	ids = append(ids, b.cfg.LeaseTTL.Microseconds(), "")
	for id, l := range b.held {
		ids = append(ids, id)
		if l.probe {
			ids[1] = id
		}
	}
	b.mu.Unlock()
	if len(ids) == 2 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.LeaseTTL/3)
	defer cancel()
	lost, err := budgetHeartbeatScript.Run(ctx, b.rdb, []string{budgetKeyLeases, budgetKeyProbe}, ids...).StringSlice()
	if err != nil {
		if ctx.Err() == nil {
			b.log.Warn().Err(err).Msg("renew API budget leases")
		}
		return
	}
	if len(lost) == 0 {
		return
	}
	n := 0
	b.mu.Lock()
	for _, id := range lost {
		if _, ok := b.held[id]; ok { // not released meanwhile
			delete(b.held, id)
			n++
		}
	}
	b.mu.Unlock()
	if n == 0 {
		return
	}
	b.stats.LeasesLost.Add(int64(n))
	b.log.Warn().Int("leases", n).Dur("lease_ttl", b.cfg.LeaseTTL).
		Msg("API budget leases expired before renewal (process stalled or Redis slow); their slots may be reused")
}

// writeConfig publishes the configuration for `livenessq status`.
func (b *Budget) writeConfig(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, budgetEvalTimeout)
	defer cancel()
	c := b.cfg
	err := b.rdb.HSet(ctx, budgetKeyConfig,
		"rate", strconv.FormatFloat(c.Rate, 'g', -1, 64),
		"window_us", c.Window.Microseconds(),
		"burst", c.Burst,
		"headroom_us", c.Headroom.Microseconds(),
		"max_inflight", c.MaxInFlight,
		"lease_ttl_us", c.LeaseTTL.Microseconds(),
		"cooldown_us", c.Cooldown.Microseconds(),
		"cooldown_max_us", c.CooldownMax.Microseconds(),
		"pause_after_us", c.PauseAfter.Microseconds(),
		"quota", c.Quota,
		"quota_period_us", c.QuotaPeriod.Microseconds(),
		"quota_anchor_us", c.QuotaResetAt.UnixMicro(),
	).Err()
	if err != nil && ctx.Err() == nil {
		b.log.Debug().Err(err).Msg("publish API budget configuration")
	}
}

// Lease is the right to make one API call: a slot among MaxInFlight, admitted by the
// rate limit, outside any cooldown (or as the cooldown's probe). Release it exactly once
// when the call is over.
type Lease struct {
	b          *Budget
	id         string
	probe      bool
	local      bool // granted without Redis by an unconstrained budget: nothing to free there
	admittedAt time.Time
	sent       atomic.Int64 // the latest departure recorded by Sent, Redis clock µs
	released   atomic.Bool
}

// Probe reports whether this call is the probe after a usage-limit cooldown: the one
// call, across all processes, that tests whether the limit has lifted. Its outcome
// decides for everyone: OutcomeOK closes the cooldown, OutcomeUsageLimited doubles it.
func (l *Lease) Probe() bool { return l.probe }

// AdmittedAt returns the turn the lease was granted for (when its call may leave), by
// the Redis server's clock (the clock every process shares), to the microsecond.
func (l *Lease) AdmittedAt() time.Time { return l.admittedAt }

// Logged reports whether the lease's turn is in the send log, so that [Lease.Sent]
// has something to correct.
func (l *Lease) Logged() bool { return !l.local && !l.probe && l.b.logN > 0 }

// Sent tells the budget when the call's request left (its headers were written). If
// that was later after the turn than a caller may wake (1 ms by default: the process
// stalled between the two), the send log learns it in the background, so that the
// calls a window after it keep their distance. Calls after the first that are not
// later are no-ops.
func (l *Lease) Sent(at time.Time) {
	b := l.b
	if !l.Logged() {
		return
	}
	late := at.Sub(b.localTime(l.admittedAt))
	if late <= b.lateMove() {
		return
	}
	redisAt := l.admittedAt.Add(late)
	for {
		prev := l.sent.Load()
		if prev >= redisAt.UnixMicro() {
			return
		}
		if l.sent.CompareAndSwap(prev, redisAt.UnixMicro()) {
			break
		}
	}
	b.stats.Moved.Add(1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), budgetEvalTimeout)
		defer cancel()
		err := b.rdb.ZAddArgs(ctx, budgetKeySent, redis.ZAddArgs{XX: true, GT: true,
			Members: []redis.Z{{Score: float64(redisAt.UnixMicro()), Member: l.id}}}).Err()
		if err != nil {
			b.stats.Unavailable.Add(1)
			b.log.Warn().Err(err).Dur("late", late).Msg("record a late API call in the budget's send log")
		}
	}()
}

type budgetReleaseOpts struct{ retryAfter time.Duration }

// ReleaseOption adjusts one [Lease.Release].
type ReleaseOption func(*budgetReleaseOpts)

// WithRetryAfter passes the wait the API asked for (a Retry-After header) with a 403: the
// cooldown it opens or doubles lasts at least that long, still capped by CooldownMax.
func WithRetryAfter(d time.Duration) ReleaseOption {
	return func(o *budgetReleaseOpts) { o.retryAfter = max(o.retryAfter, d) }
}

// Release frees the lease's slot and applies the call's outcome to the shared cooldown:
// OutcomeUsageLimited opens the cooldown for every process (or, from the probe, doubles
// it); OutcomeOK from the probe closes it for every process. When 403s have persisted
// for PauseAfter, Release records the pause reason in Redis and calls the configured
// Pause, once across all processes.
//
// Release runs even if ctx is already canceled (it detaches from cancellation, bounded
// by a few seconds), so a call's end is never lost to a task timeout. Releasing twice
// is a no-op returning nil. If Redis cannot be reached the error wraps
// ErrBudgetUnavailable and the slot returns when the lease expires.
func (l *Lease) Release(ctx context.Context, outcome Outcome, opts ...ReleaseOption) error {
	if !l.released.CompareAndSwap(false, true) {
		return nil
	}
	var o budgetReleaseOpts
	for _, opt := range opts {
		opt(&o)
	}
	return l.b.release(ctx, l, outcome, o)
}

// newLeaseID returns an id unique across processes.
func (b *Budget) newLeaseID() string {
	return b.instance + ":" + strconv.FormatUint(b.seq.Add(1), 36)
}

type budgetAttempt struct {
	code  int64
	wait  time.Duration
	now   time.Time
	probe bool
}

// Acquire blocks until the budget admits one API call, and returns its lease. It is
// admitted, atomically in one Redis script, only when no cooldown is open (or this
// caller takes the probe lock after one), the period's quota is not used up, fewer than
// MaxInFlight leases are held, and the rate limit has room; otherwise it waits what
// Redis says (plus jitter) and tries again. Callers in one process queue behind each
// other, so at most one per process polls Redis. The rate limit grants a turn up to a
// few milliseconds ahead; Acquire returns at that turn, so that the call leaves on
// schedule whatever the round trip to Redis took.
//
// The caller reports when its request leaves with [Lease.Sent]: a call that leaves
// late is recorded then, so that the calls after it keep their distance.
//
// It returns ctx's error when ctx ends first, and an error wrapping
// ErrBudgetUnavailable, at once, when Redis cannot be reached: no lease, no call.
func (b *Budget) Acquire(ctx context.Context) (*Lease, error) {
	start := time.Now()
	defer func() { b.stats.WaitNanos.Add(int64(time.Since(start))) }()
	if b.unconstrained {
		if l, err := b.acquireClear(ctx); l != nil || err != nil {
			return l, err
		}
	}
	for {
		l, turn, err := b.reserve(ctx)
		if err != nil {
			return nil, err
		}
		// The last stretch is slept precisely: calls leaving late crowd a window.
		if err := sleepCtx(ctx, time.Until(turn)-budgetPreciseSleep); err != nil {
			_ = l.Release(ctx, OutcomeOther)
			return nil, err
		}
		sleepPrecisely(time.Until(turn))
		// A call leaving after its turn (a busy machine) could crowd the calls after
		// it into one window. A little late (up to Headroom/2), it goes, and the
		// caller's Sent tells the log when it left; later, the log learns it first,
		// or, when that is no longer safe, the turn is given up, costing rate, never
		// a 403.
		if l.Logged() && time.Since(turn) > b.cfg.Headroom/2 {
			ok, err := b.move(ctx, l, turn)
			if err != nil {
				_ = l.Release(ctx, OutcomeOther)
				return nil, err
			}
			if !ok {
				b.stats.Late.Add(1)
				_ = l.Release(ctx, OutcomeOther)
				continue
			}
		}
		// A 403 this process saw while the turn came closes it (other processes learn
		// of it at their next grant, at most budgetReserveAhead later).
		if !l.probe && b.cooldownLeft() > 0 {
			_ = l.Release(ctx, OutcomeOther)
			continue
		}
		return l, nil
	}
}

// lateMove is how late after its turn a caller may leave without re-recording it.
func (b *Budget) lateMove() time.Duration { return min(budgetLateMove, b.cfg.Headroom/4) }

// move re-records a late lease's turn in the send log a moment later (budgetPreciseSleep
// after Redis runs the script) and sleeps until then, so that the call leaves when the
// log says. It reports false when the turn is given up: more than budgetMaxLate late, or
// the move would put more than logN calls in a span. Its error wraps
// ErrBudgetUnavailable.
func (b *Budget) move(ctx context.Context, l *Lease, turn time.Time) (bool, error) {
	for range budgetMoveTries {
		late := time.Since(turn)
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), budgetEvalTimeout)
		v, err := budgetMoveScript.Run(ctx, b.rdb, []string{budgetKeySent, budgetKeyGCRA},
			l.id, b.logN, b.logSpan.Microseconds(), budgetMaxLate.Microseconds(),
			strconv.FormatFloat(1e6/b.cfg.Rate, 'f', 3, 64), budgetPreciseSleep.Microseconds()).Int64Slice()
		cancel()
		if err == nil && len(v) != 3 {
			err = fmt.Errorf("move script returned %d values", len(v))
		}
		if err != nil {
			b.stats.Unavailable.Add(1)
			return false, fmt.Errorf("budget: acquire: %w: %w", ErrBudgetUnavailable, err)
		}
		b.learnClock(time.UnixMicro(v[1]))
		if v[0] != 1 {
			b.log.Debug().Dur("late", late).Msg("API budget turn given up")
			return false, nil
		}
		l.admittedAt = time.UnixMicro(v[2])
		turn = b.localTime(l.admittedAt)
		sleepPrecisely(time.Until(turn))
		if time.Since(turn) <= b.lateMove() {
			b.stats.Moved.Add(1)
			return true, nil
		}
	}
	return false, nil
}

// budgetClear is a check that found no cooldown: when it was made, by the local clock
// and by Redis's.
type budgetClear struct {
	local, redis time.Time
}

// acquireClear grants a lease without Redis when the last check, at most budgetClearFor
// ago, found no cooldown; otherwise it checks again (one caller per process does). It
// returns nil, nil when a cooldown exists: the caller goes through the script.
func (b *Budget) acquireClear(ctx context.Context) (*Lease, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := b.clear.Load()
	if c == nil || time.Since(c.local) >= budgetClearFor {
		b.clearMu.Lock()
		c = b.clear.Load()
		if c == nil || time.Since(c.local) >= budgetClearFor {
			var err error
			if c, err = b.checkClear(ctx); err != nil {
				b.clearMu.Unlock()
				b.stats.Unavailable.Add(1)
				return nil, fmt.Errorf("budget: acquire: %w: %w", ErrBudgetUnavailable, err)
			}
		}
		b.clearMu.Unlock()
	}
	if c == nil || b.cooldownLeft() > 0 {
		return nil, nil
	}
	b.stats.Admitted.Add(1)
	return &Lease{b: b, id: b.newLeaseID(), local: true, admittedAt: c.redis.Add(time.Since(c.local))}, nil
}

// checkClear asks Redis whether a cooldown record exists (open, or over and waiting for
// its probe) and remembers the answer when none does.
func (b *Budget) checkClear(ctx context.Context) (*budgetClear, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), budgetEvalTimeout)
	defer cancel()
	pipe := b.rdb.Pipeline()
	t := pipe.Time(ctx)
	n := pipe.Exists(ctx, budgetKeyCooldown)
	if _, err := pipe.Exec(ctx); err != nil {
		b.clear.Store(nil)
		return nil, err
	}
	if n.Val() != 0 {
		b.clear.Store(nil)
		return nil, nil
	}
	c := &budgetClear{local: time.Now(), redis: t.Val()}
	b.clear.Store(c)
	return c, nil
}

// reserve holds this process's turn to talk to Redis until the script grants a lease,
// and returns it with the moment its call may leave.
func (b *Budget) reserve(ctx context.Context) (*Lease, time.Time, error) {
	select {
	case b.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, time.Time{}, ctx.Err()
	}
	defer func() { <-b.turn }()

	id := b.newLeaseID()
	for {
		if err := ctx.Err(); err != nil {
			return nil, time.Time{}, err
		}
		a, err := b.try(ctx, id)
		if err != nil {
			b.stats.Unavailable.Add(1)
			return nil, time.Time{}, fmt.Errorf("budget: acquire: %w: %w", ErrBudgetUnavailable, err)
		}
		if a.code == budgetAdmitted {
			l := &Lease{b: b, id: id, probe: a.probe, admittedAt: a.now.Add(a.wait)}
			b.cooldownUntil.Store(0)
			b.stats.Admitted.Add(1)
			if a.probe {
				b.stats.Probes.Add(1)
				b.log.Info().Msg("API usage-limit cooldown over: making the probe call")
			}
			b.mu.Lock()
			b.held[id] = l
			b.mu.Unlock()
			return l, b.localTime(a.now.Add(a.wait)), nil
		}
		if err := sleepCtx(ctx, b.waitFor(a)); err != nil {
			return nil, time.Time{}, err
		}
	}
}

// learnClock refines the estimate of this host's clock minus Redis's from one script
// answer: the local time it arrived minus the Redis time it carries is that offset plus
// the answer's delay on the way back, so the smallest recent sample is the closest. The
// estimate creeps up 2 µs per sample, so that it follows a clock that moves.
func (b *Budget) learnClock(redisNow time.Time) {
	sample := time.Since(redisNow)
	est := time.Duration(b.clockOffset.Load())
	if !b.clockKnown.Load() || sample < est+2*time.Microsecond {
		b.clockOffset.Store(int64(sample))
		b.clockKnown.Store(true)
		return
	}
	b.clockOffset.Store(int64(est + 2*time.Microsecond))
}

// localTime maps a Redis-clock time to this host's clock.
func (b *Budget) localTime(redisT time.Time) time.Time {
	return redisT.Add(time.Duration(b.clockOffset.Load()))
}

// sleepCtx sleeps for d, or until ctx ends (returning its error).
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// try runs the acquire script once. It is detached from ctx's cancellation, so that a
// grant is never lost between Redis and the caller.
func (b *Budget) try(ctx context.Context, id string) (budgetAttempt, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), budgetEvalTimeout)
	defer cancel()
	c := b.cfg
	v, err := budgetAcquireScript.Run(ctx, b.rdb,
		[]string{budgetKeyGCRA, budgetKeyLeases, budgetKeyCooldown, budgetKeyProbe, budgetKeyQuota, budgetKeySent},
		id, c.MaxInFlight, c.LeaseTTL.Microseconds(),
		strconv.FormatFloat(b.cfg.Rate, 'f', -1, 64), b.tolUS,
		c.Quota, c.QuotaPeriod.Microseconds(), c.QuotaResetAt.UnixMicro(),
		budgetConcPoll.Microseconds(), budgetProbePoll.Microseconds(), budgetReserveAhead.Microseconds(),
		b.logN, b.logSpan.Microseconds(),
	).Int64Slice()
	if err != nil {
		return budgetAttempt{}, err
	}
	if len(v) != 4 {
		return budgetAttempt{}, fmt.Errorf("acquire script returned %d values", len(v))
	}
	b.learnClock(time.UnixMicro(v[2]))
	return budgetAttempt{
		code:  v[0],
		wait:  time.Duration(v[1]) * time.Microsecond,
		now:   time.UnixMicro(v[2]),
		probe: v[3] == 1,
	}, nil
}

// waitFor counts a refusal and returns how long to sleep before the next attempt: what
// Redis said, capped so a changed state is noticed, plus jitter.
func (b *Budget) waitFor(a budgetAttempt) time.Duration {
	wait := min(a.wait, budgetMaxSleep)
	jit := min(b.cfg.Jitter, wait/2)
	switch a.code {
	case budgetDeniedRate:
		b.stats.DeniedRate.Add(1)
		jit = min(jit, budgetReserveAhead/4) // the turn is still granted ahead of time
	case budgetDeniedConc:
		b.stats.DeniedConcurrency.Add(1)
	case budgetDeniedCool:
		b.stats.DeniedCooldown.Add(1)
		b.cooldownUntil.Store(time.Now().Add(a.wait).UnixNano())
	case budgetDeniedProbe:
		b.stats.DeniedCooldown.Add(1)
		b.cooldownUntil.Store(0)
	case budgetDeniedQuota:
		b.stats.DeniedQuota.Add(1)
	}
	if jit > 0 {
		wait += mrand.N(jit + 1)
	}
	return max(wait, time.Microsecond)
}

// cooldownLeft returns how long the usage-limit cooldown still runs, as this process last
// saw it (no Redis round trip); 0 when none is known to be open.
func (b *Budget) cooldownLeft() time.Duration {
	u := b.cooldownUntil.Load()
	if u == 0 {
		return 0
	}
	return max(0, time.Until(time.Unix(0, u)))
}

func (b *Budget) release(ctx context.Context, l *Lease, outcome Outcome, o budgetReleaseOpts) error {
	if outcome == OutcomeUsageLimited {
		b.clear.Store(nil) // this process stops at once, not at its next check
	}
	if l.local && outcome != OutcomeUsageLimited {
		return nil
	}
	b.mu.Lock()
	delete(b.held, l.id)
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), budgetReleaseTimeout)
	defer cancel()

	code := 0
	switch outcome {
	case OutcomeOK:
		code = 1
	case OutcomeUsageLimited:
		code = 2
		b.stats.UsageLimited.Add(1)
	}
	probe := "0"
	if l.probe {
		probe = "1"
	}
	c := b.cfg
	reason := fmt.Sprintf("the Kairos API has answered 403 (usage limit) for more than %v; "+
		"run `livenessq resume` once the limit is lifted", c.PauseAfter)
	v, err := budgetReleaseScript.Run(ctx, b.rdb,
		[]string{budgetKeyLeases, budgetKeyCooldown, budgetKeyProbe, budgetKeyPaused},
		l.id, code, probe, c.Cooldown.Microseconds(), c.CooldownMax.Microseconds(),
		c.PauseAfter.Microseconds(), o.retryAfter.Microseconds(), reason,
	).Int64Slice()
	if err != nil {
		b.stats.Unavailable.Add(1)
		return fmt.Errorf("budget: release: %w: %w", ErrBudgetUnavailable, err)
	}
	if len(v) != 7 {
		return fmt.Errorf("budget: release: script returned %d values", len(v))
	}
	event, pausedNow := v[0], v[1] == 1
	now, until := time.UnixMicro(v[2]), time.UnixMicro(v[3])
	length, streak := time.Duration(v[4])*time.Microsecond, v[5]
	switch event {
	case budgetEventOpened, budgetEventExtended, budgetEventRearmed:
		b.cooldownUntil.Store(time.Now().Add(until.Sub(now)).UnixNano())
	case budgetEventClosed:
		b.cooldownUntil.Store(0)
		b.stats.CooldownsClosed.Add(1)
		b.log.Info().Msg("API usage-limit cooldown closed: the probe call succeeded")
	}
	switch event {
	case budgetEventOpened:
		b.stats.CooldownsOpened.Add(1)
		b.log.Warn().Dur("cooldown", length).Msg("API usage limit reached (403): every worker stops calling the API")
	case budgetEventRearmed:
		b.stats.CooldownsOpened.Add(1)
		b.log.Warn().Dur("cooldown", length).Int64("streak", streak).
			Time("limited_since", time.UnixMicro(v[6])).Msg("API probe call got 403 again: cooldown doubled")
	}
	if !pausedNow {
		return nil
	}
	b.stats.Pauses.Add(1)
	b.log.Error().Str("reason", reason).Msg("API usage limit persists: pausing the queue")
	if c.Pause == nil {
		return nil
	}
	if err := c.Pause(ctx, reason); err != nil {
		if derr := b.rdb.Del(ctx, budgetKeyPaused).Err(); derr != nil {
			b.log.Warn().Err(derr).Msg("remove pause record after failed pause")
		}
		return fmt.Errorf("budget: pause queue: %w", err)
	}
	return nil
}
