package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/kairos/kairostest"
	"github.com/livenessq/livenessq/results"
)

// Redis databases of the scenarios: each starts on a flushed database of its own.
const (
	benchDBBudgetOurs  = 1
	benchDBBudgetUsual = 2
	benchDBOverhead    = 3
	benchDBLatency     = 4
	benchDBMeet        = 5
	benchDBEnqueue     = 6
	benchDBMemory      = 7
)

// benchNoopQueue is the queue the no-op worker serves.
const benchNoopQueue = "bench-noop"

// benchEmu is a running emulator process.
type benchEmu struct {
	proc *benchProc
	base string // http://127.0.0.1:PORT
}

// api returns the URL workers call.
func (e *benchEmu) api() string { return e.base + "/v0.2/liveness-verification" }

// stats reads the emulator's counters.
func (e *benchEmu) stats(ctx context.Context) (kairostest.Stats, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.base+kairostest.StatsPath, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return kairostest.Stats{}, fmt.Errorf("emulator stats: %w", err)
	}
	defer resp.Body.Close()
	var s kairostest.Stats
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("emulator stats: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return s, fmt.Errorf("emulator stats: %w", err)
	}
	return s, nil
}

// startEmulator runs `livenessq emulator` with a usage limit of rateLimit requests in any
// 1-second window (0: none) and the given latency.
//
// The API's clock runs on machines of its own; here the emulator shares two CPUs with
// the workers it measures, and a starved emulator reads arrival times late. So, with
// --emulator-nice and where the system allows it, it runs at a higher scheduling
// priority (nice(1) execs it: same PID, its CPU still counted).
func (b *bench) startEmulator(name string, rateLimit int, latency time.Duration) (*benchEmu, error) {
	exe, args := b.exe, []string{"emulator", "--addr", "127.0.0.1:0",
		"--rate-limit", strconv.Itoa(rateLimit), "--latency", latency.String(),
		"--log-level", "warn", "--log-format", "json"}
	if b.f.emulatorNice != 0 {
		if nice, err := exec.LookPath("nice"); err == nil {
			exe, args = nice, append([]string{"-n", strconv.Itoa(b.f.emulatorNice), b.exe}, args...)
		}
	}
	p, err := startProc(name, b.logDir, exe, args, nil)
	if err != nil {
		return nil, err
	}
	line, err := p.firstLine(30 * time.Second)
	if err != nil {
		p.kill()
		return nil, err
	}
	base := strings.TrimSpace(strings.TrimPrefix(line, "listening on "))
	if !strings.HasPrefix(base, "http://") {
		p.kill()
		return nil, fmt.Errorf("emulator printed %q, not its address", line)
	}
	return &benchEmu{proc: p, base: base}, nil
}

// workerSpec is one worker process of a scenario.
type workerSpec struct {
	name        string
	db          int
	queue       string
	concurrency int
	rate        float64 // the budget's --rate; 0: none
	inflight    int     // --max-inflight; 0: none
	api         string
	localRate   float64 // > 0: the usual recipe (bench _worker --local-rate)
	noop        bool    // bench _worker --noop
}

// startWorker starts a worker process: `livenessq worker` for ours (or `bench _worker`
// with profiles under --profile), `bench _worker` for the baselines.
func (b *bench) startWorker(s workerSpec) (*benchProc, error) {
	queue := s.queue
	if queue == "" {
		queue = enqueue.DefaultQueue
	}
	args := []string{"worker", "--http-addr="}
	switch {
	case s.noop:
		args = []string{"bench", "_worker", "--noop"}
	case s.localRate > 0:
		args = []string{"bench", "_worker", "--local-rate", strconv.FormatFloat(s.localRate, 'f', -1, 64)}
	case b.f.profile:
		args = []string{"bench", "_worker",
			"--cpuprofile", filepath.Join(b.profDir, s.name+".cpu.pprof"),
			"--memprofile", filepath.Join(b.profDir, s.name+".heap.pprof")}
	}
	args = append(args,
		"--redis", b.svc.redisURL(s.db),
		"--storage", b.bucket.URL(),
		"--queue", queue,
		"--concurrency", strconv.Itoa(s.concurrency),
		"--poll-interval", b.f.pollInterval.String(),
		"--shutdown-timeout", "3s",
		"--log-format", "json",
		"--log-level", "info",
	)
	if !s.noop {
		args = append(args, "--api-url", s.api)
		if s.rate > 0 {
			args = append(args, "--rate", strconv.FormatFloat(s.rate, 'f', -1, 64), "--burst", "1", "--cooldown", b.f.cooldown.String())
		}
		if s.inflight > 0 {
			args = append(args, "--max-inflight", strconv.Itoa(s.inflight))
		}
	}
	env := append(b.svc.s3.env(), "KAIROS_APP_ID=livenessq-bench", "KAIROS_APP_KEY=bench-app-key")
	return startProc(s.name, b.logDir, b.exe, args, env)
}

// waitWorkers waits until every process in procs runs an asynq server on rdb.
func waitWorkers(ctx context.Context, rdb redis.UniversalClient, procs ...*benchProc) error {
	insp := asynq.NewInspectorFromRedisClient(rdb)
	deadline := time.Now().Add(60 * time.Second)
	for {
		servers, err := insp.Servers()
		if err != nil {
			return fmt.Errorf("list asynq servers: %w", err)
		}
		up := map[int]bool{}
		for _, s := range servers {
			up[s.PID] = true
		}
		missing := ""
		for _, p := range procs {
			if p.exited() {
				return fmt.Errorf("%s exited at start (log: %s)%s", p.name, p.log, p.logTail())
			}
			if !up[p.pid()] {
				missing = p.name
			}
		}
		if missing == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not start serving within 60 s", missing)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// stopAll stops the processes (SIGTERM, then SIGKILL after grace).
func stopAll(grace time.Duration, procs ...*benchProc) {
	for _, p := range procs {
		if p != nil && !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range procs {
		if p != nil {
			_ = p.stop(grace)
		}
	}
}

// scenarioDB returns a client on db, flushed, and a results store on it.
func (b *bench) scenarioDB(ctx context.Context, db int) (*redis.Client, *results.Store, error) {
	rdb := b.svc.redis(db)
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		rdb.Close()
		return nil, nil, fmt.Errorf("flush Redis database %d: %w", db, err)
	}
	store, err := results.New(results.Config{Redis: rdb, Bucket: b.bucket.Sub(DefaultResultsPrefix)})
	if err != nil {
		rdb.Close()
		return nil, nil, err
	}
	return rdb, store, nil
}

// enqueue enqueues src as batch id (new when empty) on queue, in this process.
func (b *bench) enqueue(ctx context.Context, rdb redis.UniversalClient, store *results.Store, queue, id string, src enqueue.Source) (enqueue.Summary, error) {
	c, err := enqueue.New(enqueue.Config{Redis: rdb, Batches: store, Queue: queue, Logger: zerolog.Nop()})
	if err != nil {
		return enqueue.Summary{}, err
	}
	defer c.Close()
	return c.Enqueue(ctx, enqueue.Batch{ID: id, Storage: b.bucket.URL(), Source: "bench"}, src, nil)
}

// selfieKeys returns the first n keys of the 100 KB set.
func (b *bench) selfieKeys(n int) enqueue.Source {
	set := selfies100K(b.f.selfies)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = set.key(i)
	}
	return enqueue.Keys(keys...)
}

// waitBatch waits until batch id is complete, failing when a worker exits or timeout
// passes.
func waitBatch(ctx context.Context, store *results.Store, id string, timeout time.Duration, workers ...*benchProc) (*results.BatchSummary, error) {
	deadline := time.Now().Add(timeout)
	for {
		sum, err := store.Batch(ctx, id)
		if err != nil && !errors.Is(err, results.ErrBatchNotFound) {
			return nil, err
		}
		if sum != nil && sum.Complete {
			return sum, nil
		}
		for _, w := range workers {
			if w.exited() {
				return nil, fmt.Errorf("%s exited (log: %s)%s", w.name, w.log, w.logTail())
			}
		}
		if time.Now().After(deadline) {
			done := int64(0)
			if sum != nil {
				done = sum.Done
			}
			return sum, fmt.Errorf("batch %s not complete after %v (%d results)", id, timeout, done)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// verified counts a batch's results that carry the API's verdict.
func verified(sum *results.BatchSummary) int64 {
	return sum.Counts[results.StatusLive] + sum.Counts[results.StatusNotLive] + sum.Counts[results.StatusNoFace]
}

// checkVerified returns an error unless all n results of the batch are verdicts.
func checkVerified(sum *results.BatchSummary, n int) error {
	if v := verified(sum); v != int64(n) {
		return fmt.Errorf("batch %s: %d of %d results are verdicts (counts %v)", sum.Info.ID, v, n, sum.Counts)
	}
	return nil
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// sleepUntil sleeps until t or until ctx ends.
func sleepUntil(ctx context.Context, t time.Time) error {
	return sleepCtx(ctx, time.Until(t))
}

// completedTasks returns the number of completed tasks asynq keeps for queue.
func completedTasks(ctx context.Context, rdb redis.UniversalClient, queue string) (int64, error) {
	return rdb.ZCard(ctx, "asynq:{"+queue+"}:completed").Result()
}

// ratio formats a/b, or "n/a".
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
