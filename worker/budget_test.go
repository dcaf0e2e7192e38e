package worker

import (
	"context"
	"errors"
	"math"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/internal/testenv"
)

// budgetTestBundle is two "processes" sharing one budget: two Redis clients on the test
// DB (flushed), each with its own Budget.
type budgetTestBundle struct {
	rdb    *redis.Client // process A's client
	a, b   *Budget
	ctx    context.Context
	cancel context.CancelFunc
}

// budgetSetup flushes the budget's test DB and starts two budgets with cfg, each on its
// own Redis client, as two worker processes would.
func budgetSetup(t *testing.T, cfg BudgetConfig) *budgetTestBundle {
	t.Helper()
	rdb := testenv.Redis(t, testenv.DBBudget)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return &budgetTestBundle{
		rdb:    rdb,
		a:      budgetStart(t, rdb, cfg),
		b:      budgetStart(t, budgetClient(t), cfg),
		ctx:    ctx,
		cancel: cancel,
	}
}

// budgetClient returns a second client on the budget's test DB (another "process").
func budgetClient(t *testing.T) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), DB: testenv.DBBudget})
	t.Cleanup(func() { c.Close() })
	return c
}

// budgetStart starts a budget on rdb and shuts it down when the test ends.
func budgetStart(t *testing.T, rdb redis.UniversalClient, cfg BudgetConfig) *Budget {
	t.Helper()
	cfg.Redis = rdb
	b, err := NewBudget(cfg)
	require.NoError(t, err)
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(func() { require.NoError(t, b.Shutdown(context.Background())) })
	return b
}

// budgetEventually polls cond every 5 ms until it holds or the deadline passes.
func budgetEventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// budgetMaxInWindow returns the most admissions in any half-open window [t, t+w) of the
// sorted times.
func budgetMaxInWindow(times []time.Time, w time.Duration) int {
	best, j := 0, 0
	for i := range times {
		for j < len(times) && times[j].Sub(times[i]) < w {
			j++
		}
		best = max(best, j-i)
	}
	return best
}

func TestBudgetRateNeverExceedsLimit(t *testing.T) {
	for _, tc := range []struct {
		desc  string
		rate  float64
		burst int
	}{
		{desc: "burst 1", rate: 100, burst: 1},
		{desc: "burst 10", rate: 100, burst: 10},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			bb := budgetSetup(t, BudgetConfig{Rate: tc.rate, Burst: tc.burst})
			const run = 1500 * time.Millisecond
			ctx, cancel := context.WithTimeout(bb.ctx, run)
			defer cancel()

			var mu sync.Mutex
			var times []time.Time
			var wg sync.WaitGroup
			for _, b := range []*Budget{bb.a, bb.b} {
				for range 10 {
					wg.Go(func() {
						for {
							l, err := b.Acquire(ctx)
							if err != nil {
								if ctx.Err() == nil {
									t.Errorf("Acquire: %v", err)
								}
								return
							}
							mu.Lock()
							times = append(times, l.AdmittedAt())
							mu.Unlock()
							if err := l.Release(context.Background(), OutcomeOK); err != nil {
								t.Errorf("Release: %v", err)
							}
						}
					})
				}
			}
			wg.Wait()
			slices.SortFunc(times, func(x, y time.Time) int { return x.Compare(y) })

			p := budgetPacing{Rate: tc.rate, Window: time.Second, Burst: tc.burst, Headroom: budgetDefaultHeadroom}
			pace := p.base()
			t.Logf("%d admissions in %v across 2 budgets × 10 goroutines (pace %.2f/s: %.1f%% of pace)",
				len(times), run, pace, 100*float64(len(times))/(pace*run.Seconds()))
			// Not a speed assertion: a guard against a vacuous pass (a busy machine wakes
			// waiters late, which costs rate, never correctness; a race-detector run beside
			// the whole suite once admitted 23% of the pace).
			require.GreaterOrEqual(t, float64(len(times)), pace*run.Seconds()/10, "the limiter admitted almost nothing")
			// The spacing: fewer than pace×(w+headroom) + burst in any window, plus one for
			// each turn moved because its caller woke late (it leaves when it can, which
			// may be next to another call).
			moved := bb.a.Stats().Moved.Load() + bb.b.Stats().Moved.Load()
			for _, w := range []time.Duration{time.Microsecond, time.Millisecond, 10 * time.Millisecond,
				100 * time.Millisecond, 333 * time.Millisecond, time.Second, 1200 * time.Millisecond} {
				got := budgetMaxInWindow(times, w)
				bound := pace*(w+budgetDefaultHeadroom).Seconds() + float64(tc.burst) + float64(moved)
				if float64(got) >= bound {
					t.Errorf("window %v: %d admissions, want < %.2f (%d turns moved)", w, got, bound, moved)
				}
			}
			// The contract: never more than Rate in any 1-second window, even with the
			// headroom added to it (the send log's promise).
			if got := budgetMaxInWindow(times, time.Second+budgetDefaultHeadroom); float64(got) > tc.rate {
				t.Errorf("1.008s window: %d admissions, want ≤ %v", got, tc.rate)
			}
		})
	}
}

// A caller that wakes late moves its turn in the send log to the moment it leaves, when
// every span still holds at most n calls with it there, and gives the turn up otherwise.
func TestBudgetLateTurnMoves(t *testing.T) {
	// 20/s counted over 100 ms: n = 2 calls in any span of 100 ms + 5 ms headroom.
	bb := budgetSetup(t, BudgetConfig{Rate: 20, Window: 100 * time.Millisecond, Headroom: 5 * time.Millisecond})
	b := bb.a
	require.EqualValues(t, 2, b.logN)
	require.Equal(t, 105*time.Millisecond, b.logSpan)
	ms := int64(time.Millisecond / time.Microsecond)

	// Through Acquire: the lease's entry is its turn; a move puts it at Redis's now.
	l, err := b.Acquire(bb.ctx)
	require.NoError(t, err)
	score := func(id string) (float64, error) { return bb.rdb.ZScore(bb.ctx, budgetKeySent, id).Result() }
	got, err := score(l.id)
	require.NoError(t, err)
	require.Equal(t, float64(l.AdmittedAt().UnixMicro()), got)
	before := l.AdmittedAt()
	time.Sleep(10 * time.Millisecond)
	ok, err := b.move(bb.ctx, l, b.localTime(before))
	require.NoError(t, err)
	if ok { // false only when the answer took over 1 ms to come back, three times
		require.GreaterOrEqual(t, l.AdmittedAt().Sub(before), 10*time.Millisecond)
		got, err = score(l.id)
		require.NoError(t, err)
		require.Equal(t, float64(l.AdmittedAt().UnixMicro()), got)
	}

	// A call whose request left 20 ms after its turn (stalled after Acquire) is
	// re-recorded then, in the background; an earlier report changes nothing.
	l2, err := b.Acquire(bb.ctx)
	require.NoError(t, err)
	require.True(t, l2.Logged())
	turn := b.localTime(l2.AdmittedAt())
	l2.Sent(turn.Add(20 * time.Millisecond))
	l2.Sent(turn.Add(5 * time.Millisecond))
	want := float64(l2.AdmittedAt().Add(20 * time.Millisecond).UnixMicro())
	budgetEventually(t, 2*time.Second, "the late departure in the send log", func() bool {
		got, err := score(l2.id)
		return err == nil && got == want
	})
	require.NoError(t, l2.Release(bb.ctx, OutcomeOK))

	// The script: entries a (60 ms ago), late (its turn, 10 ms ago), ahead (in 30 ms).
	// The GCRA's next turn is 1 s away, so that a refund shows.
	const gcraAt = 1_000_000_000
	move := func(entries map[string]int64) int64 {
		t.Helper()
		now, err := bb.rdb.Time(bb.ctx).Result()
		require.NoError(t, err)
		require.NoError(t, bb.rdb.Del(bb.ctx, budgetKeySent).Err())
		for id, off := range entries {
			require.NoError(t, bb.rdb.ZAdd(bb.ctx, budgetKeySent, redis.Z{Score: float64(now.UnixMicro() + off), Member: id}).Err())
		}
		require.NoError(t, bb.rdb.Set(bb.ctx, budgetKeyGCRA, now.UnixMicro()+gcraAt, time.Minute).Err())
		v, err := budgetMoveScript.Run(bb.ctx, bb.rdb, []string{budgetKeySent, budgetKeyGCRA}, "late",
			b.logN, b.logSpan.Microseconds(), 100*ms, 50*ms, 0).Int64Slice()
		require.NoError(t, err)
		return v[0]
	}
	refunded := func() bool {
		t.Helper()
		now, err := bb.rdb.Time(bb.ctx).Result()
		require.NoError(t, err)
		tat, err := bb.rdb.Get(bb.ctx, budgetKeyGCRA).Float64()
		require.NoError(t, err)
		return tat-float64(now.UnixMicro()) < float64(gcraAt-40*ms)
	}
	// a, late at now and ahead would be three calls in 90 ms: refused, the turn given up
	// and its GCRA interval (50 ms) given back.
	require.EqualValues(t, 0, move(map[string]int64{"a": -60 * ms, "late": -10 * ms, "ahead": 30 * ms}))
	_, err = score("late")
	require.ErrorIs(t, err, redis.Nil, "a turn that cannot move is given up")
	require.True(t, refunded(), "a given-up turn returns its interval to the GCRA")
	// More than max late (100 ms): given up.
	require.EqualValues(t, 0, move(map[string]int64{"late": -150 * ms}))
	require.True(t, refunded())
	// Without the call ahead: two calls (a, late) in the span, moved.
	require.EqualValues(t, 1, move(map[string]int64{"a": -60 * ms, "late": -10 * ms}))
	require.False(t, refunded(), "a moved turn keeps the GCRA's schedule")
	// The call ahead but a gone from the span: moved.
	require.EqualValues(t, 1, move(map[string]int64{"a": -200 * ms, "late": -10 * ms, "ahead": 30 * ms}))
	// Two calls already in the span before now: refused.
	require.EqualValues(t, 0, move(map[string]int64{"a": -60 * ms, "b": -30 * ms, "late": -10 * ms}))
	// A turn that is not in the log (expired, or given up): not moved.
	require.EqualValues(t, 0, move(map[string]int64{"a": -60 * ms}))
}

func TestBudgetMaxInFlightAcrossProcesses(t *testing.T) {
	const capacity = 5
	bb := budgetSetup(t, BudgetConfig{MaxInFlight: capacity})
	var inFlight, peak, calls atomic.Int64
	var wg sync.WaitGroup
	for _, b := range []*Budget{bb.a, bb.b} {
		for range 50 {
			wg.Go(func() {
				for range 4 {
					l, err := b.Acquire(bb.ctx)
					if err != nil {
						t.Errorf("Acquire: %v", err)
						return
					}
					n := inFlight.Add(1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
					calls.Add(1)
					time.Sleep(time.Millisecond)
					inFlight.Add(-1)
					if err := l.Release(context.Background(), OutcomeOK); err != nil {
						t.Errorf("Release: %v", err)
					}
				}
			})
		}
	}
	wg.Wait()
	t.Logf("%d calls, peak %d in flight (cap %d)", calls.Load(), peak.Load(), capacity)
	require.Equal(t, int64(400), calls.Load())
	require.LessOrEqual(t, peak.Load(), int64(capacity), "calls in flight exceeded MaxInFlight")
	st, err := bb.a.State(bb.ctx)
	require.NoError(t, err)
	require.Equal(t, 0, st.InFlight, "every lease released")
}

func TestBudgetLeaseOfDeadProcessExpires(t *testing.T) {
	const ttl = 500 * time.Millisecond
	bb := budgetSetup(t, BudgetConfig{MaxInFlight: 1, LeaseTTL: ttl})

	la, err := bb.a.Acquire(bb.ctx)
	require.NoError(t, err)

	// While A lives, its heartbeat keeps the slot taken well past the lease TTL.
	ctx, cancel := context.WithTimeout(bb.ctx, 3*ttl)
	_, err = bb.b.Acquire(ctx)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded, "B got the slot while A held it")

	// A "dies": its heartbeat stops, the lease is never released.
	require.NoError(t, bb.a.Shutdown(bb.ctx))
	lb, err := bb.b.Acquire(bb.ctx)
	require.NoError(t, err, "the dead process's slot should return")
	require.GreaterOrEqual(t, lb.AdmittedAt().Sub(la.AdmittedAt()), 3*ttl)

	// A late release by the dead lease frees nothing of B's.
	require.NoError(t, la.Release(bb.ctx, OutcomeOK))
	st, err := bb.b.State(bb.ctx)
	require.NoError(t, err)
	require.Equal(t, 1, st.InFlight)
	require.NoError(t, lb.Release(bb.ctx, OutcomeOK))
}

func TestBudgetUsageLimitStopsOtherProcess(t *testing.T) {
	bb := budgetSetup(t, BudgetConfig{Cooldown: time.Minute})
	const workers = 8
	ctx, cancel := context.WithCancel(bb.ctx)
	defer cancel()

	var mu sync.Mutex
	var admitted []time.Time
	var waiting atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				waiting.Add(1)
				l, err := bb.b.Acquire(ctx)
				waiting.Add(-1)
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("Acquire: %v", err)
					}
					return
				}
				mu.Lock()
				admitted = append(admitted, l.AdmittedAt())
				mu.Unlock()
				time.Sleep(time.Millisecond)
				if err := l.Release(context.Background(), OutcomeOK); err != nil {
					t.Errorf("Release: %v", err)
				}
			}
		})
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(admitted) }
	budgetEventually(t, 5*time.Second, "B to make calls", func() bool { return count() >= 20 })

	// Process A's call gets a 403.
	la, err := bb.a.Acquire(bb.ctx)
	require.NoError(t, err)
	require.NoError(t, la.Release(bb.ctx, OutcomeUsageLimited))
	st, err := ReadBudgetState(bb.ctx, bb.rdb)
	require.NoError(t, err)
	require.True(t, st.Cooling)
	require.Equal(t, time.Minute, st.CooldownLength)
	require.Equal(t, 1, st.CooldownStreak)
	limitedAt := st.LimitedSince
	require.Equal(t, limitedAt.Add(time.Minute), st.CooldownUntil)

	// Every one of B's callers ends up blocked in Acquire...
	budgetEventually(t, 5*time.Second, "all of B's callers to block", func() bool { return waiting.Load() == workers })
	n := count()
	time.Sleep(100 * time.Millisecond)
	require.Equal(t, n, count(), "B admitted a call during the cooldown")
	cancel()
	wg.Wait()

	// ...and none of its admissions comes later than budgetClearFor after the 403 was
	// recorded (the issue asks for 100 ms): an unconstrained budget trusts a check that
	// found no cooldown that long.
	mu.Lock()
	defer mu.Unlock()
	last := slices.MaxFunc(admitted, time.Time.Compare)
	t.Logf("B's last admission came %v after the 403 was recorded", last.Sub(limitedAt))
	if last.After(limitedAt.Add(budgetClearFor)) {
		t.Errorf("B admitted a call at %v, %v after the 403 was recorded at %v", last, last.Sub(limitedAt), limitedAt)
	}
	require.Greater(t, bb.b.cooldownLeft(), 30*time.Second, "B should know the cooldown's end")
	require.Positive(t, bb.b.Stats().DeniedCooldown.Load())
}

func TestBudgetOneProbePerCooldown(t *testing.T) {
	const cooldown = 200 * time.Millisecond
	const probeCall = 50 * time.Millisecond
	bb := budgetSetup(t, BudgetConfig{Cooldown: cooldown, CooldownMax: 10 * time.Second})

	l, err := bb.a.Acquire(bb.ctx)
	require.NoError(t, err)
	require.False(t, l.Probe())
	require.NoError(t, l.Release(bb.ctx, OutcomeUsageLimited))
	st, err := bb.a.State(bb.ctx)
	require.NoError(t, err)
	opened := st.LimitedSince

	type probe struct {
		at     time.Time
		length time.Duration // the cooldown after its release
		streak int
	}
	ctx, cancel := context.WithCancel(bb.ctx)
	defer cancel()
	var mu sync.Mutex
	var probes []probe
	var normal []time.Time
	var wg sync.WaitGroup
	for _, b := range []*Budget{bb.a, bb.b} {
		for range 6 {
			wg.Go(func() {
				for {
					l, err := b.Acquire(ctx)
					if err != nil {
						if ctx.Err() == nil {
							t.Errorf("Acquire: %v", err)
						}
						return
					}
					if !l.Probe() {
						mu.Lock()
						normal = append(normal, l.AdmittedAt())
						if len(normal) >= 20 {
							cancel()
						}
						mu.Unlock()
						if err := l.Release(context.Background(), OutcomeOK); err != nil {
							t.Errorf("Release: %v", err)
						}
						continue
					}
					mu.Lock()
					probes = append(probes, probe{at: l.AdmittedAt()})
					n := len(probes)
					mu.Unlock()
					time.Sleep(probeCall)
					outcome := OutcomeOK
					if n == 1 {
						outcome = OutcomeUsageLimited // the first probe still gets a 403
					}
					if err := l.Release(context.Background(), outcome); err != nil {
						t.Errorf("Release: %v", err)
					}
					if n == 1 {
						st, err := b.State(context.Background())
						if err != nil {
							t.Errorf("State: %v", err)
						}
						mu.Lock()
						probes[0].length, probes[0].streak = st.CooldownLength, st.CooldownStreak
						mu.Unlock()
					}
				}
			})
		}
	}
	wg.Wait()
	require.NoError(t, bb.ctx.Err(), "the cooldown never closed")

	require.Len(t, probes, 2, "want exactly one probe per cooldown")
	require.GreaterOrEqual(t, probes[0].at.Sub(opened), cooldown, "first probe before the cooldown ended")
	require.Equal(t, 2*cooldown, probes[0].length, "a 403 on the probe doubles the cooldown")
	require.Equal(t, 2, probes[0].streak)
	require.GreaterOrEqual(t, probes[1].at.Sub(probes[0].at), probeCall+2*cooldown, "second probe before the doubled cooldown ended")
	for _, at := range normal {
		require.GreaterOrEqual(t, at.Sub(probes[1].at), probeCall, "a call was admitted before the probe succeeded")
	}
	st, err = ReadBudgetState(bb.ctx, bb.rdb)
	require.NoError(t, err)
	require.False(t, st.Cooling, "the OK probe closes the cooldown for everyone")
	require.False(t, st.Probing)
	require.Zero(t, bb.a.cooldownLeft()+bb.b.cooldownLeft())
	require.Equal(t, int64(2), bb.a.Stats().Probes.Load()+bb.b.Stats().Probes.Load())
}

func TestBudgetPauseAfterPersistentLimit(t *testing.T) {
	const pauseAfter = 300 * time.Millisecond
	var pauses atomic.Int64
	var reasons sync.Map
	pause := func(_ context.Context, reason string) error {
		pauses.Add(1)
		reasons.Store(reason, true)
		return nil
	}
	bb := budgetSetup(t, BudgetConfig{Cooldown: 20 * time.Millisecond, CooldownMax: 40 * time.Millisecond,
		PauseAfter: pauseAfter, Pause: pause})

	// Every call, probes included, gets a 403, from both processes.
	ctx, cancel := context.WithCancel(bb.ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, b := range []*Budget{bb.a, bb.b} {
		for range 3 {
			wg.Go(func() {
				for ctx.Err() == nil {
					l, err := b.Acquire(ctx)
					if err != nil {
						if ctx.Err() == nil {
							t.Errorf("Acquire: %v", err)
						}
						return
					}
					if err := l.Release(context.Background(), OutcomeUsageLimited); err != nil {
						t.Errorf("Release: %v", err)
					}
				}
			})
		}
	}
	budgetEventually(t, 10*time.Second, "Pause to be called", func() bool { return pauses.Load() > 0 })
	probes := bb.a.Stats().Probes.Load() + bb.b.Stats().Probes.Load()
	budgetEventually(t, 10*time.Second, "more failed probes after the pause", func() bool {
		return bb.a.Stats().Probes.Load()+bb.b.Stats().Probes.Load() >= probes+5
	})
	cancel()
	wg.Wait()

	require.Equal(t, int64(1), pauses.Load(), "Pause is called once per episode across processes")
	st, err := ReadBudgetState(bb.ctx, bb.rdb)
	require.NoError(t, err)
	require.True(t, st.Paused)
	_, ok := reasons.Load(st.PauseReason)
	require.True(t, ok, "recorded reason %q is the one passed to Pause", st.PauseReason)
	require.Contains(t, st.PauseReason, "403")
	require.GreaterOrEqual(t, st.PausedAt.Sub(st.LimitedSince), pauseAfter)
	require.Equal(t, 40*time.Millisecond, st.CooldownLength, "doubling is capped at CooldownMax")
	require.GreaterOrEqual(t, st.CooldownStreak, 3)

	require.NoError(t, ResumeBudget(bb.ctx, bb.rdb))
	st, err = ReadBudgetState(bb.ctx, bb.rdb)
	require.NoError(t, err)
	require.False(t, st.Paused)
	require.False(t, st.Cooling)
	l, err := bb.a.Acquire(bb.ctx)
	require.NoError(t, err)
	require.False(t, l.Probe(), "after resume, calls flow without a probe")
	require.NoError(t, l.Release(bb.ctx, OutcomeOK))
}

func TestBudgetPauseFailureIsRetried(t *testing.T) {
	var pauses atomic.Int64
	pause := func(context.Context, string) error {
		if pauses.Add(1) == 1 {
			return errors.New("queue unreachable")
		}
		return nil
	}
	bb := budgetSetup(t, BudgetConfig{Cooldown: 10 * time.Millisecond, CooldownMax: 10 * time.Millisecond,
		PauseAfter: 50 * time.Millisecond, Pause: pause})
	var failed int
	for pauses.Load() < 2 {
		l, err := bb.a.Acquire(bb.ctx)
		require.NoError(t, err)
		if err := l.Release(bb.ctx, OutcomeUsageLimited); err != nil {
			require.ErrorContains(t, err, "queue unreachable")
			failed++
			st, err := bb.a.State(bb.ctx)
			require.NoError(t, err)
			require.False(t, st.Paused, "a failed pause leaves no record")
		}
	}
	require.Equal(t, 1, failed)
	st, err := bb.a.State(bb.ctx)
	require.NoError(t, err)
	require.True(t, st.Paused)
}

func TestBudgetPacing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc    string
		p       budgetPacing
		used    int64
		toReset time.Duration
		want    float64
	}{
		{desc: "no rate, no quota: unlimited",
			p: budgetPacing{Window: time.Second, Burst: 1}, want: math.Inf(1)},
		{desc: "defaults: headroom costs 0.8%",
			p:    budgetPacing{Rate: 200, Window: time.Second, Burst: 1, Headroom: budgetDefaultHeadroom},
			want: 200 / 1.008},
		{desc: "no headroom, burst 1: exactly the rate",
			p: budgetPacing{Rate: 200, Window: time.Second, Burst: 1}, want: 200},
		{desc: "burst costs nothing: the send log caps every window",
			p:    budgetPacing{Rate: 200, Window: time.Second, Burst: 11, Headroom: 5 * time.Millisecond},
			want: 200 / 1.005},
		{desc: "not a whole number of calls per window: the whole part",
			p:    budgetPacing{Rate: 1.5, Window: time.Second, Burst: 1, Headroom: 5 * time.Millisecond},
			want: 1 / 1.005},
		{desc: "less than one call per window: one per 1/Rate",
			p:    budgetPacing{Rate: 0.5, Window: time.Second, Burst: 1, Headroom: 5 * time.Millisecond},
			want: 1 / 2.005},
		{desc: "per-minute limit",
			p:    budgetPacing{Rate: 0.5, Window: time.Minute, Burst: 1, Headroom: 5 * time.Millisecond},
			want: 30 / 60.005},
		{desc: "quota pacing below the rate",
			p:    budgetPacing{Rate: 200, Window: time.Second, Burst: 1, Headroom: 5 * time.Millisecond, Quota: 1000},
			used: 400, toReset: time.Hour, want: 600.0 / 3600},
		{desc: "quota pacing never above the rate",
			p:    budgetPacing{Rate: 10, Window: time.Second, Burst: 1, Quota: 100000},
			used: 0, toReset: time.Second, want: 10},
		{desc: "quota alone",
			p:    budgetPacing{Window: time.Second, Burst: 1, Quota: 86400},
			used: 43200, toReset: 12 * time.Hour, want: 1},
		{desc: "quota used up",
			p:    budgetPacing{Rate: 200, Window: time.Second, Burst: 1, Quota: 1000},
			used: 1000, toReset: time.Hour, want: 0},
		{desc: "quota over-used",
			p:    budgetPacing{Rate: 200, Window: time.Second, Burst: 1, Quota: 1000},
			used: 1001, toReset: time.Hour, want: 0},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			got := tc.p.pace(tc.used, tc.toReset)
			if math.IsInf(tc.want, 1) {
				require.True(t, math.IsInf(got, 1), "got %v, want +Inf", got)
				return
			}
			require.InDelta(t, tc.want, got, 1e-9)
		})
	}
}

func TestBudgetTolerance(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc string
		p    budgetPacing
		want time.Duration
	}{
		{desc: "burst 1: none", p: budgetPacing{Rate: 200, Window: time.Second, Burst: 1, Headroom: 5 * time.Millisecond},
			want: 0},
		{desc: "burst 3 at 100/s: two intervals at the rate", p: budgetPacing{Rate: 100, Window: time.Second, Burst: 3, Headroom: 5 * time.Millisecond},
			want: 20 * time.Millisecond},
		{desc: "no rate", p: budgetPacing{Window: time.Second, Burst: 5, Headroom: time.Millisecond}, want: 0},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, tc.p.tolerance())
		})
	}
}

func TestBudgetQuotaPacing(t *testing.T) {
	rdb := testenv.Redis(t, testenv.DBBudget)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resetAt := time.Now().Add(300 * time.Millisecond).Truncate(time.Microsecond)
	b := budgetStart(t, rdb, BudgetConfig{Quota: 2, QuotaPeriod: time.Hour, QuotaResetAt: resetAt})

	acquire := func() *Lease {
		t.Helper()
		l, err := b.Acquire(ctx)
		require.NoError(t, err)
		require.NoError(t, l.Release(ctx, OutcomeOK))
		return l
	}
	l1, l2 := acquire(), acquire()
	// Two calls left over the time to the reset: the second waits half of it.
	minGap := resetAt.Sub(l1.AdmittedAt())/2 - budgetDefaultHeadroom
	require.GreaterOrEqual(t, l2.AdmittedAt().Sub(l1.AdmittedAt()), minGap)

	// The quota is used up: the next call waits for the next period.
	st, err := b.State(ctx)
	require.NoError(t, err)
	if st.Now.Before(resetAt) {
		require.Equal(t, int64(2), st.QuotaUsed)
		require.Zero(t, st.QuotaLeft)
		require.Equal(t, resetAt, st.QuotaResetAt)
	}
	l3 := acquire()
	require.False(t, l3.AdmittedAt().Before(resetAt), "admitted at %v, before the quota reset at %v", l3.AdmittedAt(), resetAt)

	st, err = b.State(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), st.QuotaUsed)
	require.Equal(t, int64(1), st.QuotaLeft)
	require.Equal(t, resetAt.Add(time.Hour), st.QuotaResetAt)
	require.InDelta(t, 1/st.QuotaResetAt.Sub(st.Now).Seconds(), st.PaceRate, 1e-9)

	// One call left for an hour: paced, not admitted now.
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	_, err = b.Acquire(short)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Positive(t, b.Stats().DeniedQuota.Load())
	require.Positive(t, b.Stats().DeniedRate.Load())
}

func TestBudgetStateShowsConfiguration(t *testing.T) {
	bb := budgetSetup(t, BudgetConfig{Rate: 200, MaxInFlight: 64})
	var st BudgetState
	budgetEventually(t, 5*time.Second, "the configuration to be published", func() bool {
		var err error
		st, err = ReadBudgetState(bb.ctx, bb.rdb)
		require.NoError(t, err)
		return st.Configured
	})
	l, err := bb.a.Acquire(bb.ctx)
	require.NoError(t, err)
	got, err := ReadBudgetState(bb.ctx, bb.rdb)
	require.NoError(t, err)
	require.NoError(t, l.Release(bb.ctx, OutcomeOK))
	want := BudgetState{
		Configured: true, Rate: 200, Window: time.Second, Burst: 1, Headroom: budgetDefaultHeadroom,
		PaceRate: 200 / 1.008, InFlight: 1, MaxInFlight: 64,
	}
	got.Now = time.Time{}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ReadBudgetState (-want +got):\n%s", diff)
	}
	own, err := bb.a.State(bb.ctx)
	require.NoError(t, err)
	own.Now = time.Time{}
	want.InFlight = 0
	if diff := cmp.Diff(want, own); diff != "" {
		t.Errorf("Budget.State (-want +got):\n%s", diff)
	}
}

func TestBudgetStartShutdown(t *testing.T) {
	rdb := testenv.Redis(t, testenv.DBBudget)
	ctx := context.Background()
	b, err := NewBudget(BudgetConfig{Redis: rdb})
	require.NoError(t, err)
	require.NoError(t, b.Shutdown(ctx), "shutdown before start")
	require.Error(t, b.Start(ctx), "start after shutdown")

	b, err = NewBudget(BudgetConfig{Redis: rdb})
	require.NoError(t, err)
	require.NoError(t, b.Start(ctx))
	require.NoError(t, b.Start(ctx), "second start is a no-op")
	require.NoError(t, b.Shutdown(ctx))
	require.NoError(t, b.Shutdown(ctx), "second shutdown is a no-op")
}

func TestBudgetReleaseTwiceAndCanceled(t *testing.T) {
	bb := budgetSetup(t, BudgetConfig{MaxInFlight: 1})
	l, err := bb.a.Acquire(bb.ctx)
	require.NoError(t, err)
	canceled, cancel := context.WithCancel(bb.ctx)
	cancel()
	require.NoError(t, l.Release(canceled, OutcomeOK), "Release runs on a canceled context")
	require.NoError(t, l.Release(bb.ctx, OutcomeUsageLimited), "second Release is a no-op")
	st, err := bb.a.State(bb.ctx)
	require.NoError(t, err)
	require.Zero(t, st.InFlight)
	require.False(t, st.Cooling, "the second Release changed nothing")

	_, err = bb.a.Acquire(canceled)
	require.ErrorIs(t, err, context.Canceled)
}

func TestBudgetRetryAfterLengthensCooldown(t *testing.T) {
	bb := budgetSetup(t, BudgetConfig{Cooldown: time.Second, CooldownMax: time.Minute})
	l, err := bb.a.Acquire(bb.ctx)
	require.NoError(t, err)
	require.NoError(t, l.Release(bb.ctx, OutcomeUsageLimited, WithRetryAfter(30*time.Second)))
	st, err := bb.a.State(bb.ctx)
	require.NoError(t, err)
	require.Equal(t, 30*time.Second, st.CooldownLength)
}

// budgetFreePort returns a loopback TCP port that was free a moment ago.
func budgetFreePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return strconv.Itoa(port)
}

func TestBudgetRedisDown(t *testing.T) {
	bin := testenv.Binary(t, testenv.EnvRedisServer)
	port := budgetFreePort(t)
	srv := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	require.NoError(t, srv.Start())
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = srv.Process.Kill()
			_ = srv.Wait()
		}
	}
	t.Cleanup(stop)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + port, DialTimeout: 500 * time.Millisecond,
		DialerRetries: 1, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	budgetEventually(t, 10*time.Second, "the private redis-server", func() bool { return rdb.Ping(ctx).Err() == nil })

	b := budgetStart(t, rdb, BudgetConfig{MaxInFlight: 4})
	l, err := b.Acquire(ctx)
	require.NoError(t, err)
	free := budgetStart(t, rdb, BudgetConfig{}) // unconstrained: checks Redis every budgetClearFor
	lf, err := free.Acquire(ctx)
	require.NoError(t, err)
	require.NoError(t, lf.Release(ctx, OutcomeOK))

	stop()
	got, err := b.Acquire(ctx)
	require.ErrorIs(t, err, ErrBudgetUnavailable)
	require.Nil(t, got, "no lease, no call")
	require.NoError(t, ctx.Err(), "Acquire must fail fast, not wait for ctx")
	time.Sleep(budgetClearFor)
	got, err = free.Acquire(ctx)
	require.ErrorIs(t, err, ErrBudgetUnavailable, "an unconstrained budget stops within budgetClearFor")
	require.Nil(t, got, "no lease, no call")
	require.ErrorIs(t, l.Release(ctx, OutcomeOK), ErrBudgetUnavailable)
	_, err = b.State(ctx)
	require.ErrorIs(t, err, ErrBudgetUnavailable)
	require.Equal(t, int64(2), b.Stats().Unavailable.Load())
	require.Equal(t, int64(1), b.Stats().Admitted.Load())
}

func TestBudgetRedisUnreachable(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + budgetFreePort(t), DialTimeout: 200 * time.Millisecond,
		DialerRetries: 1, MaxRetries: -1})
	defer rdb.Close()
	b, err := NewBudget(BudgetConfig{Redis: rdb, Rate: 10})
	require.NoError(t, err)
	l, err := b.Acquire(context.Background())
	require.ErrorIs(t, err, ErrBudgetUnavailable)
	require.Nil(t, l)
}

func TestNewBudgetValidates(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	for _, tc := range []struct {
		desc string
		cfg  BudgetConfig
	}{
		{desc: "no redis", cfg: BudgetConfig{}},
		{desc: "negative rate", cfg: BudgetConfig{Redis: rdb, Rate: -1}},
		{desc: "NaN rate", cfg: BudgetConfig{Redis: rdb, Rate: math.NaN()}},
		{desc: "burst too large for the rate", cfg: BudgetConfig{Redis: rdb, Rate: 5, Burst: 6}},
		{desc: "negative burst", cfg: BudgetConfig{Redis: rdb, Burst: -1}},
		{desc: "negative headroom", cfg: BudgetConfig{Redis: rdb, Headroom: -time.Millisecond}},
		{desc: "negative max in flight", cfg: BudgetConfig{Redis: rdb, MaxInFlight: -1}},
		{desc: "tiny lease TTL", cfg: BudgetConfig{Redis: rdb, LeaseTTL: time.Microsecond}},
		{desc: "cooldown max below cooldown", cfg: BudgetConfig{Redis: rdb, Cooldown: time.Minute, CooldownMax: time.Second}},
		{desc: "negative pause after", cfg: BudgetConfig{Redis: rdb, PauseAfter: -time.Second}},
		{desc: "negative quota", cfg: BudgetConfig{Redis: rdb, Quota: -1}},
		{desc: "negative jitter", cfg: BudgetConfig{Redis: rdb, Jitter: -time.Millisecond}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			_, err := NewBudget(tc.cfg)
			require.Error(t, err)
		})
	}
	b, err := NewBudget(BudgetConfig{Redis: rdb, Cooldown: time.Hour})
	require.NoError(t, err)
	require.Equal(t, time.Hour, b.cfg.CooldownMax, "default CooldownMax grows to Cooldown")
	require.Equal(t, budgetDefaultLeaseTTL, b.cfg.LeaseTTL)
}
