package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"golang.org/x/time/rate"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/kairos"
	"github.com/livenessq/livenessq/worker"
)

// The bench's hidden roles: `livenessq bench _worker …` and `livenessq bench _enqueue …`
// run the processes the scenarios compare against (and a profiled worker). They are not
// commands of their own, nor knobs of `livenessq worker`: bench-only.
var benchRoles = map[string]func(ctx context.Context, env *environ, args []string) error{
	"_worker":  runBenchWorker,
	"_enqueue": runBenchEnqueue,
}

// runBenchWorker is a worker process for the bench. With no extra flag it is `livenessq
// worker` (the same flags, the same worker.Worker) without the HTTP endpoint. Its extra
// flags are bench-only knobs:
//
//	--noop           an asynq server whose handler does nothing (the overhead baseline)
//	--local-rate R   "the usual recipe": an in-process golang.org/x/time/rate limiter at R
//	                 calls/s before each API call replaces the global budget (the budget
//	                 keeps no rate, no cap, and a 1 ms cooldown, so a 403 only retries
//	                 the task)
//	--cpuprofile F   write a CPU profile of the whole run to F
//	--memprofile F   write a heap profile to F at exit
func runBenchWorker(ctx context.Context, env *environ, args []string) error {
	var c common
	var wf workerFlags
	var kf kairosFlags
	var noop bool
	var localRate float64
	var cpuProfile, memProfile string
	fs := newFlagSet(env, "bench _worker", "[flags]")
	c.registerConnection(fs)
	kf.register(fs)
	wf.register(fs, time.Second)
	c.registerLogging(fs)
	fs.BoolVar(&noop, "noop", false, "bench-only: serve the queue with a handler that does nothing")
	fs.Float64Var(&localRate, "local-rate", 0, "bench-only: replace the global budget with an in-process x/time/rate limiter at this rate")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "bench-only: write a CPU profile to this file")
	fs.StringVar(&memProfile, "memprofile", "", "bench-only: write a heap profile to this file at exit")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := wf.validate(); err != nil {
		return err
	}
	logger, err := c.logger(env.stderr)
	if err != nil {
		return err
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	if memProfile != "" {
		defer func() {
			if f, err := os.Create(memProfile); err == nil {
				runtime.GC()
				_ = pprof.WriteHeapProfile(f)
				f.Close()
			}
		}()
	}
	rdb, err := openRedis(ctx, c.redisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()

	if noop { // asynq on a plain client, as anyone would run it
		srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
			Concurrency:              wf.concurrency,
			Queues:                   map[string]int{c.queue: 1},
			ShutdownTimeout:          wf.shutdownTimeout,
			TaskCheckInterval:        wf.pollInterval,
			DelayedTaskCheckInterval: wf.pollInterval,
			LogLevel:                 asynq.WarnLevel,
		})
		mux := asynq.NewServeMux()
		mux.HandleFunc(enqueue.TaskType, func(context.Context, *asynq.Task) error { return nil })
		if err := srv.Start(mux); err != nil {
			return fmt.Errorf("noop worker: %w", err)
		}
		logger.Info().Int("concurrency", wf.concurrency).Msg("noop worker started")
		<-ctx.Done()
		srv.Shutdown()
		return nil
	}

	kc, err := kf.client(env, wf.concurrency)
	if err != nil {
		return err
	}
	prdb, srdb := autoPipelined(rdb) // as `livenessq worker` does
	src, res, err := openStorage(ctx, c.storageURL, c.resultsURL)
	if err != nil {
		return err
	}
	defer src.Close()
	defer res.Close()
	store, err := newResults(srdb, res, logger)
	if err != nil {
		return err
	}
	var budget *worker.Budget
	var verifier worker.Verifier = kc
	if localRate > 0 {
		budget, err = worker.NewBudget(worker.BudgetConfig{Redis: rdb, Cooldown: time.Millisecond,
			CooldownMax: time.Millisecond, PauseAfter: 24 * time.Hour, Logger: logger})
		if err != nil {
			return err
		}
		verifier = &localLimited{lim: rate.NewLimiter(rate.Limit(localRate), 1), next: kc}
	} else {
		budget, err = wf.budget(rdb, worker.QueuePauser(rdb, c.queue, logger), logger)
		if err != nil {
			return err
		}
	}
	cfg := wf.config()
	cfg.Redis, cfg.Storage, cfg.Results, cfg.Kairos, cfg.Budget = prdb, src, store, verifier, budget
	cfg.Queue, cfg.Logger = c.queue, logger
	w, err := worker.New(cfg)
	if err != nil {
		return usagef("worker: %v", err)
	}
	return w.Run(ctx)
}

// localLimited is the usual recipe: each process waits on its own rate limiter before
// each API call, knowing nothing of the others.
type localLimited struct {
	lim  *rate.Limiter
	next worker.Verifier
}

func (l *localLimited) Verify(ctx context.Context, s kairos.Selfie, threshold float64) (*kairos.Result, error) {
	if err := l.lim.Wait(ctx); err != nil {
		return nil, err
	}
	return l.next.Verify(ctx, s, threshold)
}

// benchEnqueueResult is what `bench _enqueue` prints on stdout, as one JSON line.
type benchEnqueueResult struct {
	Keys int64 `json:"keys"`
	// Seconds is the run's time: listing and enqueueing, except for client-listed, where
	// it is the enqueueing alone.
	Seconds float64 `json:"seconds"`
	// ListSeconds is the time spent listing before enqueueing (loop, client-listed).
	ListSeconds float64 `json:"list_seconds,omitempty"`
	PeakHeap    uint64  `json:"peak_heap_bytes"`
	PeakRSS     int64   `json:"peak_rss_bytes"` // VmHWM of this process
}

// runBenchEnqueue lists a storage prefix and enqueues every key, one of three ways:
//
//	--mode client         enqueue.Client.Enqueue over enqueue.Prefix (listing and
//	                      enqueueing overlap, InFlight enqueues at a time, pipelined)
//	--mode loop           the loop it replaces: list every key first, then asynq's
//	                      Client.Enqueue one task at a time (same payload, options and
//	                      task ids)
//	--mode client-listed  list every key first, then enqueue.Client.Enqueue over them: the
//	                      enqueueing alone, to compare with the loop's
//
// It prints a benchEnqueueResult.
func runBenchEnqueue(ctx context.Context, env *environ, args []string) error {
	var c common
	var mode, prefix, batch string
	fs := newFlagSet(env, "bench _enqueue", "[flags]")
	c.registerConnection(fs)
	c.registerLogging(fs)
	fs.StringVar(&mode, "mode", "client", "client, loop, or client-listed (enqueue.Client over keys listed first; the listing is not timed)")
	fs.StringVar(&prefix, "prefix", "", "the key prefix listed")
	fs.StringVar(&batch, "batch", "", "batch id")
	if err := fs.parse(args); err != nil {
		return err
	}
	logger, err := c.logger(env.stderr)
	if err != nil {
		return err
	}
	cn, err := c.open(ctx, logger, false)
	if err != nil {
		return err
	}
	defer cn.close()
	rdb, src := cn.rdb, cn.src
	newClient := func() (*enqueue.Client, error) {
		return enqueue.New(enqueue.Config{Redis: rdb, Batches: cn.store, Queue: c.queue, Logger: logger})
	}
	listKeys := func() ([]string, error) {
		var keys []string
		for a, err := range src.List(ctx, prefix) {
			if err != nil {
				return nil, err
			}
			keys = append(keys, a.Key)
		}
		return keys, nil
	}

	peak := startHeapSampler()
	var out benchEnqueueResult
	start := time.Now()
	switch mode {
	case "client":
		cl, err := newClient()
		if err != nil {
			return err
		}
		sum, err := cl.Enqueue(ctx, enqueue.Batch{ID: batch, Storage: src.URL(), Source: "prefix " + prefix},
			enqueue.Prefix(ctx, src, prefix, DefaultResultsPrefix), nil)
		if err != nil {
			return err
		}
		out.Keys = sum.Enqueued
	case "client-listed":
		keys, err := listKeys()
		if err != nil {
			return err
		}
		out.ListSeconds = time.Since(start).Seconds()
		cl, err := newClient()
		if err != nil {
			return err
		}
		start = time.Now()
		sum, err := cl.Enqueue(ctx, enqueue.Batch{ID: batch, Storage: src.URL(), Source: "prefix " + prefix}, enqueue.Keys(keys...), nil)
		if err != nil {
			return err
		}
		out.Keys = sum.Enqueued
	case "loop":
		keys, err := listKeys()
		if err != nil {
			return err
		}
		out.ListSeconds = time.Since(start).Seconds()
		aq := asynq.NewClientFromRedisClient(rdb)
		thr := enqueue.DefaultThreshold
		for _, k := range keys {
			t, err := enqueue.NewVerifyTask(enqueue.Payload{Storage: src.URL(), Key: k, Threshold: &thr, BatchID: batch})
			if err != nil {
				return err
			}
			if _, err := aq.EnqueueContext(ctx, t, asynq.Queue(c.queue), asynq.MaxRetry(enqueue.DefaultMaxRetry),
				asynq.Retention(enqueue.DefaultRetention), asynq.TaskID(enqueue.TaskID(batch, src.URL(), k))); err != nil {
				return err
			}
			out.Keys++
		}
	default:
		return usagef("--mode: %q is not one of client, loop", mode)
	}
	out.Seconds = time.Since(start).Seconds() // client-listed: the enqueue alone
	out.PeakHeap = peak()
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		out.PeakRSS, _ = parseVmHWM(b)
	}
	return json.NewEncoder(env.stdout).Encode(out)
}

// startHeapSampler samples the heap in use every 10 ms; the function it returns stops it
// and returns the largest sample.
func startHeapSampler() func() uint64 {
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() {
		metrics.Read(sample)
		if v := sample[0].Value.Uint64(); v > peak.Load() {
			peak.Store(v)
		}
	}
	go func() {
		defer close(done)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				read()
			}
		}
	}()
	return func() uint64 {
		close(stop)
		<-done
		read()
		return peak.Load()
	}
}
