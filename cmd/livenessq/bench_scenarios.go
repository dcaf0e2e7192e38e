package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/kairos/kairostest"
	"github.com/livenessq/livenessq/results"
)

// budgetRun is what one variant of the budget scenario measured.
type budgetRun struct {
	rate, after   float64 // 200 answers per second over the run and after the kill
	total, denied int64   // requests, 403s
	maxPerSecond  int
	maxConcurrent int64
}

// runBudget is issue 5's benchmark: R requests in any 1-s window, W workers, one killed
// halfway; ours (the global budget) against the usual recipe (x/time/rate at R/W per
// process), one after the other, each against a fresh emulator and Redis database.
func (b *bench) runBudget(ctx context.Context) error {
	f := b.f
	R := float64(f.budgetRate)
	if need := int(R * f.budgetDuration.Seconds() * 1.1); f.budgetSelfies < need {
		return fmt.Errorf("--budget-selfies %d is too few for %v at %v/s (want %d, so the queue never runs dry)", f.budgetSelfies, f.budgetDuration, R, need)
	}
	b.logf("budget (issue 5): the emulator allows %d requests in any 1-s window (403 beyond), latency %v; %d workers × concurrency %d for %v, one SIGKILLed at %v; %d queued selfies of ~5 KB",
		f.budgetRate, f.budgetLatency, f.budgetWorkers, f.budgetConcurrency, f.budgetDuration, f.budgetKillAt, f.budgetSelfies)
	b.logf("  ours:  livenessq worker --rate %v --burst 1 --max-inflight %d --cooldown %v (the global budget in Redis); emulator at nice %d", float64(f.budgetRate)*(1-f.budgetMargin), f.budgetInflight, f.cooldown, f.emulatorNice)
	b.logf("  usual: a golang.org/x/time/rate limiter at %v/s in each process (bench _worker --local-rate)", R/float64(f.budgetWorkers))
	ours, err := b.budgetVariant(ctx, "ours", benchDBBudgetOurs, 0)
	if err != nil {
		return fmt.Errorf("ours: %w", err)
	}
	usual, err := b.budgetVariant(ctx, "usual", benchDBBudgetUsual, R/float64(f.budgetWorkers))
	if err != nil {
		return fmt.Errorf("usual: %w", err)
	}
	row := func(name string, o, u string) { b.logf("  %-34s %-22s %s", name, o, u) }
	row("", "ours", "usual (x/time/rate R/4)")
	perR := func(v float64) string { return fmt.Sprintf("%.1f/s (%.3f R)", v, v/R) }
	row("admitted/s over the run", perR(ours.rate), perR(usual.rate))
	row("admitted/s after the kill", perR(ours.after), perR(usual.after))
	row("403s (usage limit)", strconv.FormatInt(ours.denied, 10), strconv.FormatInt(usual.denied, 10))
	row("most requests in any 1-s window", strconv.Itoa(ours.maxPerSecond), strconv.Itoa(usual.maxPerSecond))
	row("most requests in flight", strconv.FormatInt(ours.maxConcurrent, 10), strconv.FormatInt(usual.maxConcurrent, 10))
	b.check("budget rate over the run", fmt.Sprintf("%.1f/s = %.3f R", ours.rate, ours.rate/R), "≥ 0.99 R", ours.rate >= 0.99*R)
	b.check("budget rate after the kill", fmt.Sprintf("%.1f/s = %.3f R", ours.after, ours.after/R), "≥ 0.99 R", ours.after >= 0.99*R)
	b.check("budget 403s", strconv.FormatInt(ours.denied, 10), "0", ours.denied == 0)
	b.check("budget most requests in any 1-s window", strconv.Itoa(ours.maxPerSecond), fmt.Sprintf("≤ R = %d", f.budgetRate), ours.maxPerSecond <= f.budgetRate)
	capOK := f.budgetInflight == 0 || ours.maxConcurrent <= int64(f.budgetInflight)
	b.check("budget most requests in flight", strconv.FormatInt(ours.maxConcurrent, 10), fmt.Sprintf("≤ cap %d", f.budgetInflight), capOK)
	return nil
}

// budgetVariant runs one variant: ours when localRate is 0, else the usual recipe.
func (b *bench) budgetVariant(ctx context.Context, name string, db int, localRate float64) (budgetRun, error) {
	f := b.f
	var out budgetRun
	rdb, store, err := b.scenarioDB(ctx, db)
	if err != nil {
		return out, err
	}
	defer rdb.Close()
	defer rdb.FlushDB(context.WithoutCancel(ctx))
	limit := f.budgetRate
	if !f.budgetEnforce {
		limit = 0
	}
	emu, err := b.startEmulator("budget-"+name+"-emulator", limit, f.budgetLatency)
	if err != nil {
		return out, err
	}
	defer stopAll(5*time.Second, emu.proc)

	// The whole set waits, paused, while the workers start.
	if _, err := b.enqueue(ctx, rdb, store, enqueue.DefaultQueue, "", enqueue.Prefix(ctx, b.bucket, benchPrefixSmall)); err != nil {
		return out, err
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	if err := insp.PauseQueue(enqueue.DefaultQueue); err != nil {
		return out, fmt.Errorf("pause the queue: %w", err)
	}
	workers := make([]*benchProc, f.budgetWorkers)
	defer func() { stopAll(10*time.Second, workers...) }()
	for i := range workers {
		spec := workerSpec{name: fmt.Sprintf("budget-%s-worker-%d", name, i+1), db: db, concurrency: f.budgetConcurrency, api: emu.api()}
		if localRate > 0 {
			spec.localRate = localRate
		} else {
			spec.rate, spec.inflight = float64(f.budgetRate)*(1-f.budgetMargin), f.budgetInflight
		}
		if workers[i], err = b.startWorker(spec); err != nil {
			return out, err
		}
	}
	if err := waitWorkers(ctx, rdb, workers...); err != nil {
		return out, err
	}
	if err := insp.UnpauseQueue(enqueue.DefaultQueue); err != nil {
		return out, fmt.Errorf("resume the queue: %w", err)
	}
	// The run starts with the first API call.
	var s0 kairostest.Stats
	for s0.Total == 0 {
		if s0, err = emu.stats(ctx); err != nil {
			return out, err
		}
		if err := sleepCtx(ctx, 2*time.Millisecond); err != nil {
			return out, err
		}
	}
	t0 := time.Now()
	// Admitted per second of the run, written to the log directory: where a rate was lost.
	ok := func(s kairostest.Stats) float64 { return float64(s.Count(200) + s.InFlight) }
	timeline := fmt.Sprintf("second admitted (the %s budget run; kill at %v)\n", name, f.budgetKillAt)
	last, at := s0, t0
	sampleUntil := func(end time.Time) (kairostest.Stats, error) {
		for at.Before(end) {
			if at = at.Add(time.Second); at.After(end) {
				at = end
			}
			if err := sleepUntil(ctx, at); err != nil {
				return last, err
			}
			s, err := emu.stats(ctx)
			if err != nil {
				return last, err
			}
			timeline += fmt.Sprintf("%6.1f %4.0f\n", at.Sub(t0).Seconds(), ok(s)-ok(last))
			last = s
		}
		return last, nil
	}
	s1, err := sampleUntil(t0.Add(f.budgetKillAt))
	if err != nil {
		return out, err
	}
	tk := time.Now()
	workers[0].kill()
	s2, err := sampleUntil(t0.Add(f.budgetDuration))
	if err != nil {
		return out, err
	}
	te := time.Now()
	if err := os.WriteFile(filepath.Join(b.logDir, "budget-"+name+"-timeline.txt"), []byte(timeline), 0o644); err != nil {
		return out, err
	}
	for _, w := range workers[1:] {
		if w.exited() {
			return out, fmt.Errorf("%s exited during the run (log: %s)%s", w.name, w.log, w.logTail())
		}
	}
	// Admitted: counted when the API admits the call, as its limit counts it (answered 200,
	// or admitted and not yet answered), not when the answer comes back a latency later.
	out.rate = (ok(s2) - ok(s0)) / te.Sub(t0).Seconds()
	out.after = (ok(s2) - ok(s1)) / te.Sub(tk).Seconds()
	out.total, out.denied = s2.Total, s2.LimitDenials
	out.maxPerSecond, out.maxConcurrent = s2.MaxPerSecond, s2.MaxConcurrent
	b.logf("  %s: %d requests (%v), %d answered 200 in %.1f s", name, s2.Total, s2.ByStatus, s2.Count(200)-s0.Count(200), te.Sub(t0).Seconds())
	return out, nil
}

// runOverhead is issue 8.1: the worker's CPU seconds per verified selfie against those
// per task of an asynq handler that does nothing, same Redis, same run. The two take
// turns, a fifth of the tasks at a time, so that a change in the machine's load during
// the run weighs on both alike.
func (b *bench) runOverhead(ctx context.Context) error {
	f := b.f
	n := f.overheadTasks
	const rounds = 5
	b.logf("overhead (issue 8.1): %d selfies of ~100 KB, emulator at zero latency, no budget, one worker at concurrency %d; and %d tasks for a no-op asynq handler at the same concurrency; in %d alternating rounds",
		n, f.overheadConcurrency, n, rounds)
	rdb, store, err := b.scenarioDB(ctx, benchDBOverhead)
	if err != nil {
		return err
	}
	defer rdb.Close()
	defer rdb.FlushDB(context.WithoutCancel(ctx))
	emu, err := b.startEmulator("overhead-emulator", 0, 0)
	if err != nil {
		return err
	}
	defer stopAll(5*time.Second, emu.proc)
	w, err := b.startWorker(workerSpec{name: "overhead-worker", db: benchDBOverhead, concurrency: f.overheadConcurrency, api: emu.api()})
	if err != nil {
		return err
	}
	defer stopAll(10*time.Second, w)
	noop, err := b.startWorker(workerSpec{name: "overhead-noop", db: benchDBOverhead, queue: benchNoopQueue, concurrency: f.overheadConcurrency, noop: true})
	if err != nil {
		return err
	}
	defer stopAll(10*time.Second, noop)
	if err := waitWorkers(ctx, rdb, w, noop); err != nil {
		return err
	}
	if err := sleepCtx(ctx, time.Second); err != nil { // past start-up
		return err
	}

	others := append([]*benchProc{emu.proc}, b.svc.procs...)
	otherCPU := make([]time.Duration, len(others))
	set := selfies100K(b.f.selfies)
	var cpu, ncpu, wall, nwall time.Duration
	done := 0
	for r := range rounds {
		k := (n - done) / (rounds - r)
		keys := make([]string, k)
		for i := range keys {
			keys[i] = set.key(done + i)
		}
		done += k

		cpu0, err := w.cpuTime()
		if err != nil {
			return err
		}
		o0 := cpuTimes(others)
		t0 := time.Now()
		sum, err := b.enqueue(ctx, rdb, store, enqueue.DefaultQueue, "", enqueue.Keys(keys...))
		if err != nil {
			return err
		}
		bs, err := waitBatch(ctx, store, sum.BatchID, 10*time.Minute, w)
		if err != nil {
			return err
		}
		wall += time.Since(t0)
		cpu1, err := w.cpuTime()
		if err != nil {
			return err
		}
		for i, c := range cpuTimes(others) {
			otherCPU[i] += c - o0[i]
		}
		cpu += cpu1 - cpu0
		if err := checkVerified(bs, k); err != nil {
			return err
		}

		ncpu0, err := noop.cpuTime()
		if err != nil {
			return err
		}
		t1 := time.Now()
		before, err := completedTasks(ctx, rdb, benchNoopQueue)
		if err != nil {
			return err
		}
		if _, err := b.enqueue(ctx, rdb, store, benchNoopQueue, "", enqueue.Keys(keys...)); err != nil {
			return err
		}
		deadline := time.Now().Add(5 * time.Minute)
		for {
			c, err := completedTasks(ctx, rdb, benchNoopQueue)
			if err != nil {
				return err
			}
			if c-before >= int64(k) {
				break
			}
			if noop.exited() || time.Now().After(deadline) {
				return fmt.Errorf("no-op worker completed %d of %d tasks (log: %s)", c-before, k, noop.log)
			}
			if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
				return err
			}
		}
		nwall += time.Since(t1)
		ncpu1, err := noop.cpuTime()
		if err != nil {
			return err
		}
		ncpu += ncpu1 - ncpu0
	}
	per := cpu.Seconds() / float64(n)
	nper := ncpu.Seconds() / float64(n)
	b.logf("  worker: %d verified selfies in %.2f s (%.0f/s), %.2f CPU-s → %.0f µs CPU per selfie", n, wall.Seconds(), float64(n)/wall.Seconds(), cpu.Seconds(), per*1e6)
	b.logf("  no-op:  %d tasks in %.2f s (%.0f/s), %.2f CPU-s → %.0f µs CPU per task", n, nwall.Seconds(), float64(n)/nwall.Seconds(), ncpu.Seconds(), nper*1e6)
	line := "  the other processes while the worker ran, CPU per selfie:"
	for i, p := range others {
		line += fmt.Sprintf(" %s %.0f µs,", p.name, otherCPU[i].Seconds()/float64(n)*1e6)
	}
	b.logf("%s", strings.TrimSuffix(line, ","))
	r := ratio(per, nper)
	b.check("overhead CPU per selfie / CPU per no-op task", fmt.Sprintf("%.2f× (%.0f µs / %.0f µs)", r, per*1e6, nper*1e6), "≤ 3×", r > 0 && r <= 3)
	return nil
}

// runLatency is issue 8.2: emulator latency 200 ms, one worker at concurrency 64.
func (b *bench) runLatency(ctx context.Context) error {
	f := b.f
	n := f.latencyTasks
	ideal := float64(f.latencyConcurrency) / f.latency.Seconds()
	b.logf("latency hiding (issue 8.2): emulator latency %v, one worker at concurrency %d, no budget, %d selfies of ~100 KB; throughput between the 10%% and 90%% marks",
		f.latency, f.latencyConcurrency, n)
	rdb, store, err := b.scenarioDB(ctx, benchDBLatency)
	if err != nil {
		return err
	}
	defer rdb.Close()
	defer rdb.FlushDB(context.WithoutCancel(ctx))
	emu, err := b.startEmulator("latency-emulator", 0, f.latency)
	if err != nil {
		return err
	}
	defer stopAll(5*time.Second, emu.proc)
	sum, err := b.enqueue(ctx, rdb, store, enqueue.DefaultQueue, "", b.selfieKeys(n))
	if err != nil {
		return err
	}
	w, err := b.startWorker(workerSpec{name: "latency-worker", db: benchDBLatency, concurrency: f.latencyConcurrency, api: emu.api()})
	if err != nil {
		return err
	}
	defer stopAll(10*time.Second, w)
	lo, hi := int64(math.Ceil(0.1*float64(n))), int64(math.Floor(0.9*float64(n)))
	var tLo, tHi time.Time
	var cLo, cHi int64
	deadline := time.Now().Add(10 * time.Minute)
	for tHi.IsZero() {
		s, err := emu.stats(ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		c := s.Count(200)
		if tLo.IsZero() && c >= lo {
			tLo, cLo = now, c
		}
		if c >= hi {
			tHi, cHi = now, c
		}
		if w.exited() || now.After(deadline) {
			return fmt.Errorf("%d of %d answered (worker log: %s)", c, n, w.log)
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
	bs, err := waitBatch(ctx, store, sum.BatchID, 5*time.Minute, w)
	if err != nil {
		return err
	}
	if err := checkVerified(bs, n); err != nil {
		return err
	}
	st, _ := emu.stats(ctx)
	tput := float64(cHi-cLo) / tHi.Sub(tLo).Seconds()
	b.logf("  %d answered between %v and %v: %.1f/s; most requests in flight %d (ideal %d/%.1f s = %.0f/s)",
		cHi-cLo, tLo.Format("15:04:05.000"), tHi.Format("15:04:05.000"), tput, st.MaxConcurrent, f.latencyConcurrency, f.latency.Seconds(), ideal)
	b.check("latency hiding throughput", fmt.Sprintf("%.1f selfies/s = %.3f × %d/%.1f s", tput, tput/ideal, f.latencyConcurrency, f.latency.Seconds()),
		fmt.Sprintf("≥ 0.95 × %.0f = %.0f/s", ideal, 0.95*ideal), tput >= 0.95*ideal)
	return nil
}

// runMeet is issue 8.3: a batch of 10,000 selfies at a budget of 500/s on two workers;
// the emulator enforces the same limit.
func (b *bench) runMeet(ctx context.Context) error {
	f := b.f
	n := f.meetTasks
	ideal := float64(n) / float64(f.meetRate)
	b.logf("meeting the budget (issue 8.3): %d selfies of ~100 KB enqueued from a prefix listing, budget --rate %d, %d workers × concurrency %d, emulator latency %v and limit %d per 1-s window; wall time from the start of the enqueue to the batch complete",
		n, f.meetRate, f.meetWorkers, f.meetConcurrency, f.meetLatency, f.meetRate)
	rdb, store, err := b.scenarioDB(ctx, benchDBMeet)
	if err != nil {
		return err
	}
	defer rdb.Close()
	defer rdb.FlushDB(context.WithoutCancel(ctx))
	emu, err := b.startEmulator("meet-emulator", f.meetRate, f.meetLatency)
	if err != nil {
		return err
	}
	defer stopAll(5*time.Second, emu.proc)
	workers := make([]*benchProc, f.meetWorkers)
	defer func() { stopAll(10*time.Second, workers...) }()
	for i := range workers {
		if workers[i], err = b.startWorker(workerSpec{name: fmt.Sprintf("meet-worker-%d", i+1), db: benchDBMeet,
			concurrency: f.meetConcurrency, rate: float64(f.meetRate), api: emu.api()}); err != nil {
			return err
		}
	}
	if err := waitWorkers(ctx, rdb, workers...); err != nil {
		return err
	}
	var src enqueue.Source
	if n == f.selfies {
		src = enqueue.Prefix(ctx, b.bucket, benchPrefix100K)
	} else {
		src = b.selfieKeys(n)
	}
	t0 := time.Now()
	sum, err := b.enqueue(ctx, rdb, store, enqueue.DefaultQueue, "", src)
	if err != nil {
		return err
	}
	tEnq := time.Since(t0)
	bs, err := waitBatch(ctx, store, sum.BatchID, 10*time.Minute, workers...)
	if err != nil {
		return err
	}
	wall := time.Since(t0)
	if err := checkVerified(bs, n); err != nil {
		return err
	}
	st, _ := emu.stats(ctx)
	b.logf("  enqueued %d in %.2f s; batch complete after %.2f s (%.1f/s); emulator: %d requests %v, most in any 1-s window %d",
		sum.Enqueued, tEnq.Seconds(), wall.Seconds(), float64(n)/wall.Seconds(), st.Total, st.ByStatus, st.MaxPerSecond)
	b.check("meet the budget wall time", fmt.Sprintf("%.2f s = %.3f × %d/%d s", wall.Seconds(), wall.Seconds()/ideal, n, f.meetRate),
		fmt.Sprintf("≤ 1.03 × %.0f s = %.1f s", ideal, 1.03*ideal), wall.Seconds() <= 1.03*ideal)
	b.check("meet the budget 403s", strconv.FormatInt(st.LimitDenials, 10), "0", st.LimitDenials == 0)
	return nil
}

// enqueueRun is one enqueuer process's outcome.
type enqueueRun struct {
	benchEnqueueResult
	rss int64 // peak RSS, bytes
}

// runEnqueue is issue 8.4: keys listed from an S3 prefix and enqueued with
// enqueue.Client, against listing first and then asynq's Enqueue one at a time; the
// enqueuer's peak memory at 10,000 and at --enqueue-keys keys.
func (b *bench) runEnqueue(ctx context.Context) error {
	f := b.f
	n := f.enqueueKeys
	b.logf("enqueue (issue 8.4): keys listed from an S3 prefix and enqueued, each run an enqueuer process of its own on a flushed Redis database")
	run := func(mode, prefix string, keys int) (enqueueRun, error) {
		var r enqueueRun
		rdb, _, err := b.scenarioDB(ctx, benchDBEnqueue)
		if err != nil {
			return r, err
		}
		defer rdb.Close()
		name := fmt.Sprintf("enqueue-%s-%d", mode, keys)
		o0 := cpuTimes(b.svc.procs)
		p, err := startProc(name, b.logDir, b.exe, []string{"bench", "_enqueue", "--mode", mode, "--prefix", prefix,
			"--batch", results.NewBatchID(), "--redis", b.svc.redisURL(benchDBEnqueue), "--storage", b.bucket.URL(),
			"--log-level", "warn", "--log-format", "json"}, b.svc.s3.env())
		if err != nil {
			return r, err
		}
		if err := p.wait(ctx); err != nil {
			return r, err
		}
		// What the run cost each process: the listing is mostly the S3 server's work, the
		// enqueueing Redis's.
		cpuLine := fmt.Sprintf("CPU: enqueuer %.2f s", (p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime()).Seconds())
		for i, c := range cpuTimes(b.svc.procs) {
			cpuLine += fmt.Sprintf(", %s %.2f s", b.svc.procs[i].name, (c - o0[i]).Seconds())
		}
		if err := json.Unmarshal(p.output(), &r.benchEnqueueResult); err != nil {
			return r, fmt.Errorf("%s printed %q: %w", name, p.output(), err)
		}
		// Not the rusage of the exited child: Linux counts in its ru_maxrss the pages it
		// shared with this process before exec.
		r.rss = r.PeakRSS
		if r.Keys != int64(keys) {
			return r, fmt.Errorf("%s enqueued %d keys, want %d", name, r.Keys, keys)
		}
		pending, err := rdb.LLen(ctx, "asynq:{"+enqueue.DefaultQueue+"}:pending").Result()
		if err != nil {
			return r, err
		}
		if pending != int64(keys) {
			return r, fmt.Errorf("%s: %d tasks pending in Redis, want %d", name, pending, keys)
		}
		line := fmt.Sprintf("  %-13s %6d keys: %6.2f s (%.0f keys/s)", mode, keys, r.Seconds, float64(keys)/r.Seconds)
		if r.ListSeconds > 0 {
			line += fmt.Sprintf(" [listing %.2f s]", r.ListSeconds)
		}
		b.logf("%s, peak RSS %s, peak heap %s; %s", line, mib(r.rss), mib(int64(r.PeakHeap)), cpuLine)
		return r, rdb.FlushDB(ctx).Err()
	}
	small := 10000
	cSmall, err := run("client", benchPrefixEnqA(n), small)
	if err != nil {
		return err
	}
	cBig, err := run("client", benchPrefixEnq(n), n)
	if err != nil {
		return err
	}
	lSmall, err := run("loop", benchPrefixEnqA(n), small)
	if err != nil {
		return err
	}
	lBig, err := run("loop", benchPrefixEnq(n), n)
	if err != nil {
		return err
	}
	kBig, err := run("client-listed", benchPrefixEnq(n), n)
	if err != nil {
		return err
	}
	loopEnqueue := lBig.Seconds - lBig.ListSeconds
	b.logf("  listing alone: %.2f s for %d keys (%.0f keys/s); enqueueing alone: enqueue.Client %.2f s vs the loop %.2f s → %.1f×",
		lBig.ListSeconds, n, float64(n)/lBig.ListSeconds, kBig.Seconds, loopEnqueue, loopEnqueue/kBig.Seconds)
	speed := lBig.Seconds / cBig.Seconds
	b.check("enqueue speed-up over list-then-loop", fmt.Sprintf("%.1f× (%.2f s vs %.2f s for %d keys)", speed, cBig.Seconds, lBig.Seconds, n), "≥ 5×", speed >= 5)
	grow := float64(cBig.rss) / float64(cSmall.rss)
	b.check("enqueue peak RSS at "+strconv.Itoa(n)+" / at 10,000 keys", fmt.Sprintf("%.2f× (%s vs %s; the loop: %s vs %s)", grow, mib(cBig.rss), mib(cSmall.rss), mib(lBig.rss), mib(lSmall.rss)),
		"≤ 1.2× (flat)", grow <= 1.2)
	return nil
}

// runMemory is issue 8.5: one worker at concurrency 64 on ~5 MB 3000×3000 JPEGs.
func (b *bench) runMemory(ctx context.Context) error {
	f := b.f
	const limit = 100 << 20
	b.logf("memory (issue 8.5): one worker at concurrency %d, %d selfies of ~5 MB (3000×3000, %d distinct objects), emulator latency %v",
		f.memoryConcurrency, f.memoryTasks, f.memoryObjects, f.memoryLatency)
	rdb, store, err := b.scenarioDB(ctx, benchDBMemory)
	if err != nil {
		return err
	}
	defer rdb.Close()
	defer rdb.FlushDB(context.WithoutCancel(ctx))
	emu, err := b.startEmulator("memory-emulator", 0, f.memoryLatency)
	if err != nil {
		return err
	}
	defer stopAll(5*time.Second, emu.proc)
	set := selfies5M(f.memoryObjects)
	var batches []string
	var counts []int
	for left := f.memoryTasks; left > 0; left -= f.memoryObjects {
		k := min(left, f.memoryObjects)
		keys := make([]string, k)
		for i := range keys {
			keys[i] = set.key(i)
		}
		sum, err := b.enqueue(ctx, rdb, store, enqueue.DefaultQueue, "", enqueue.Keys(keys...))
		if err != nil {
			return err
		}
		batches, counts = append(batches, sum.BatchID), append(counts, k)
	}
	w, err := b.startWorker(workerSpec{name: "memory-worker", db: benchDBMemory, concurrency: f.memoryConcurrency, api: emu.api()})
	if err != nil {
		return err
	}
	defer stopAll(10*time.Second, w)
	t0 := time.Now()
	for i, id := range batches {
		bs, err := waitBatch(ctx, store, id, 10*time.Minute, w)
		if err != nil {
			return err
		}
		if err := checkVerified(bs, counts[i]); err != nil {
			return err
		}
	}
	wall := time.Since(t0)
	hwm, err := w.peakRSS()
	if err != nil {
		return err
	}
	st, _ := emu.stats(ctx)
	b.logf("  %d selfies in %.1f s (%.1f/s, %.0f MB/s); most requests in flight %d; worker peak RSS %s",
		f.memoryTasks, wall.Seconds(), float64(f.memoryTasks)/wall.Seconds(), float64(f.memoryTasks)*5/wall.Seconds(), st.MaxConcurrent, mib(hwm))
	b.check("memory peak RSS at concurrency "+strconv.Itoa(f.memoryConcurrency)+" on 5 MB selfies", mib(hwm), "≤ 100 MiB", hwm <= limit)
	return nil
}

// mib formats bytes in MiB.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// cpuTimes returns the CPU time of each process so far (0 for one that cannot be read).
func cpuTimes(procs []*benchProc) []time.Duration {
	out := make([]time.Duration, len(procs))
	for i, p := range procs {
		out[i], _ = p.cpuTime()
	}
	return out
}
