package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/kairos"
	"github.com/livenessq/livenessq/kairos/kairostest"
	"github.com/livenessq/livenessq/results"
	"github.com/livenessq/livenessq/worker"
)

func init() {
	register(&command{name: "run", summary: "verify a directory or storage prefix in one process, with progress and a summary (the embedded default)", run: runRun})
}

// runEmulatorAppID is the app id `run` gives its built-in emulator (the key is random).
const runEmulatorAppID = "livenessq-run"

func runRun(ctx context.Context, env *environ, args []string) error {
	var c common
	var sf sourceFlags
	var bf batchFlags
	var wf workerFlags
	var kf kairosFlags
	var emuLatency time.Duration
	fs := newFlagSet(env, "run", "[flags] [KEY ...]")
	c.registerConnection(fs)
	sf.register(fs)
	bf.register(fs, true)
	wf.register(fs, 50*time.Millisecond)
	kf.register(fs)
	fs.DurationVar(&emuLatency, "emulator-latency", 0, "latency of the built-in emulator's answers (to watch the progress bar on a small set)")
	fs.bindEnv("emulator-latency", "LIVENESSQ_EMULATOR_LATENCY")
	c.registerLogging(fs)
	if f := fs.Lookup("log-level"); f != nil { // the progress bar and summary speak for run
		f.DefValue = "warn"
		_ = f.Value.Set("warn")
	}
	if f := fs.Lookup("storage"); f != nil {
		f.Usage += " (default " + defaultSampleDir + ", the shipped sample set)"
	}
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := wf.validate(); err != nil {
		return err
	}
	bf.threshold, bf.maxAttempts = wf.threshold, wf.maxAttempts
	if err := bf.validate(); err != nil {
		return err
	}
	if emuLatency < 0 {
		return usagef("--emulator-latency: must not be negative, got %v", emuLatency)
	}
	logger, err := c.logger(env.stderr)
	if err != nil {
		return err
	}
	say := func(format string, args ...any) { fmt.Fprintf(env.stderr, "livenessq run: "+format+"\n", args...) }

	// Redis: in-process unless --redis is given.
	var rdb redis.UniversalClient
	embedded := c.redisURL == ""
	if embedded {
		mr := miniredis.NewMiniRedis()
		mr.ClockTTL(true)
		if err := mr.Start(); err != nil {
			return fmt.Errorf("start in-process Redis: %w", err)
		}
		defer mr.Close()
		rdb = redis.NewClient(&redis.Options{Addr: mr.Addr()})
		say("using in-process Redis (gone when run ends; give --redis redis://HOST:PORT to keep the queue and batch)")
	} else if rdb, err = openRedis(ctx, c.redisURL); err != nil {
		return err
	}
	cn := newConns(rdb, false)
	defer cn.close()

	// Storage: the sample set unless --storage names another.
	storageURL := c.storageURL
	if storageURL == "" {
		storageURL = defaultSampleDir
		if _, err := os.Stat(defaultSampleDir); errors.Is(err, os.ErrNotExist) {
			dir, err := sampleCacheDir()
			if err != nil {
				return err
			}
			if err := writeSampleSet(dir); err != nil {
				return err
			}
			storageURL = dir
			say("%s not found here: wrote the sample set to %s", defaultSampleDir, dir)
		}
	}
	if err := cn.openStores(ctx, storageURL, c.resultsURL, logger); err != nil {
		return err
	}
	src, res, store := cn.src, cn.res, cn.store

	// Kairos: the real API when credentials are given, else the built-in emulator.
	var kc *kairos.Client
	if env.getenv("KAIROS_APP_ID") != "" || env.getenv("KAIROS_APP_KEY") != "" {
		if kc, err = kf.client(env, wf.concurrency); err != nil {
			return err
		}
		say("calling the Kairos API at %s (credentials from KAIROS_APP_ID/KAIROS_APP_KEY)", redactedURL(kf.apiURL))
	} else {
		key := randomHex(16) // the emulator's and the client's only: never shown
		emuURL, stop, err := startRunEmulator(key, emuLatency)
		if err != nil {
			return err
		}
		defer stop()
		kc, err = kairos.New(kairos.Config{BaseURL: emuURL, AppID: runEmulatorAppID, AppKey: key, Timeout: kf.timeout, UserAgent: "livenessq", MaxConns: wf.concurrency})
		if err != nil {
			return err
		}
		say("using the built-in Kairos emulator at %s (set KAIROS_APP_ID and KAIROS_APP_KEY to call the real API)", emuURL)
	}

	opened, err := sf.open(ctx, env, fs.Args(), src, resultsSkip(src, res, c.resultsURL != ""), true)
	if err != nil {
		return err
	}
	defer opened.close()
	client, err := enqueue.New(enqueue.Config{Redis: rdb, Batches: store, Queue: c.queue, MaxRetry: bf.maxAttempts - 1, Logger: logger})
	if err != nil {
		return err
	}
	defer client.Close()
	budget, err := wf.budget(rdb, worker.QueuePauser(rdb, c.queue, logger), logger)
	if err != nil {
		return err
	}
	cfg := wf.config()
	cfg.Redis, cfg.Storage, cfg.Results, cfg.Kairos, cfg.Budget = rdb, src, store, kc, budget
	cfg.Queue, cfg.Logger = c.queue, logger
	w, err := worker.New(cfg)
	if err != nil {
		return usagef("run: %v", err)
	}
	if err := w.Start(ctx); err != nil {
		return err
	}
	defer w.Shutdown(context.Background())

	batchID := bf.id
	if batchID == "" {
		batchID = results.NewBatchID()
	}
	start := time.Now()
	type enqueued struct {
		sum enqueue.Summary
		err error
	}
	enqDone := make(chan enqueued, 1)
	go func() {
		sum, err := client.Enqueue(ctx, enqueue.Batch{ID: batchID, Storage: src.URL(), Source: opened.desc,
			Threshold: bf.threshold, CallbackURL: bf.callbackURL}, opened.src, nil)
		enqDone <- enqueued{sum, err}
	}()

	prog := newProgress(env.stderr, 5*time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	var lastPauseCheck time.Time
	var enq *enqueued
	var summary *results.BatchSummary
poll:
	for {
		select {
		case e := <-enqDone:
			enq = &e
			if e.err != nil {
				prog.finish("")
				return fmt.Errorf("enqueue %s: %w", opened.desc, e.err)
			}
		case <-tick.C:
		case <-ctx.Done():
			prog.finish("")
			if summary != nil {
				writeRunSummary(env.stdout, summary, runInfo{elapsed: time.Since(start), threshold: bf.threshold})
			}
			return ctx.Err()
		}
		// A paused queue (refused credentials, a usage limit that persists, an operator's
		// `livenessq pause`) would leave run waiting forever: stop and say why.
		if time.Since(lastPauseCheck) >= time.Second {
			lastPauseCheck = time.Now()
			if reason, paused := pausedReason(ctx, insp, rdb, c.queue); paused {
				prog.finish("")
				if summary != nil {
					writeRunSummary(env.stdout, summary, runInfo{elapsed: time.Since(start), threshold: bf.threshold})
				}
				return fmt.Errorf("processing stopped: the queue %q is paused: %s", c.queue, reason)
			}
		}
		s, err := store.Batch(ctx, batchID)
		switch {
		case errors.Is(err, results.ErrBatchNotFound):
			continue
		case err != nil && ctx.Err() == nil:
			logger.Warn().Err(err).Msg("read batch progress")
			continue
		case err != nil:
			continue
		}
		summary = s
		if enq != nil && s.Complete {
			break poll
		}
		prog.update(runProgressLine(s, enq != nil, time.Since(start)))
	}
	elapsed := time.Since(start)
	prog.finish(runProgressLine(summary, true, elapsed))
	_ = w.Shutdown(context.Background())

	info := runInfo{elapsed: elapsed, threshold: bf.threshold, results: res.URL(), batchID: batchID,
		embedded: embedded, malformed: enq.sum.Errors, malformedN: enq.sum.Malformed}
	writeRunSummary(env.stdout, summary, info)
	return nil
}

// pausedReason reports whether queue is paused, and the reason the budget or worker
// recorded, if any.
func pausedReason(ctx context.Context, insp *asynq.Inspector, rdb redis.UniversalClient, queue string) (string, bool) {
	info, err := insp.GetQueueInfo(queue)
	if err != nil || !info.Paused {
		return "", false
	}
	reason := "run `livenessq resume` once the cause is fixed"
	if st, err := worker.ReadBudgetState(ctx, rdb); err == nil && st.PauseReason != "" {
		reason = st.PauseReason
	}
	return reason, true
}

// runProgressLine renders `run`'s progress: bar, done/total, rate, ETA.
func runProgressLine(s *results.BatchSummary, enqueueDone bool, elapsed time.Duration) string {
	total := s.Enqueued
	rate := 0.0
	if elapsed > 0 {
		rate = float64(s.Done) / elapsed.Seconds()
	}
	totalStr := fmt.Sprint(total)
	if !enqueueDone {
		totalStr += "+"
	}
	pct := 0.0
	if total > 0 {
		pct = 100 * float64(min(s.Done, total)) / float64(total)
	}
	var eta time.Duration
	known := enqueueDone && rate > 0
	if known {
		eta = time.Duration(float64(total-s.Done) / rate * float64(time.Second))
	}
	if enqueueDone && s.Done >= total {
		return fmt.Sprintf("%s %d/%s 100%%  %.1f/s  done in %s", bar(s.Done, total, 30), s.Done, totalStr, rate, elapsed.Round(10*time.Millisecond))
	}
	return fmt.Sprintf("%s %d/%s %3.0f%%  %.1f/s  %s", bar(s.Done, total, 30), s.Done, totalStr, pct, rate, formatETA(eta, known))
}

// runInfo is what the summary says besides the batch's statistics.
type runInfo struct {
	elapsed    time.Duration
	threshold  float64
	results    string // the results location's URL
	batchID    string
	embedded   bool // in-process Redis: the batch is gone after run
	malformed  []enqueue.RowError
	malformedN int64
}

// writeRunSummary prints the end of `run`: counts per status, the score histogram, flips
// and where the results are.
func writeRunSummary(w io.Writer, s *results.BatchSummary, info runInfo) {
	rate := 0.0
	if info.elapsed > 0 {
		rate = float64(s.Done) / info.elapsed.Seconds()
	}
	fmt.Fprintf(w, "\nbatch %s: %d selfies verified in %s (%.1f/s)\n\n", s.Info.ID, s.Done, info.elapsed.Round(10*time.Millisecond), rate)

	fmt.Fprintf(w, "%-15s %7s\n", "status", "count")
	for _, st := range results.Statuses {
		if n := s.Counts[st]; n > 0 {
			fmt.Fprintf(w, "%-15s %7d\n", st, n)
		}
	}
	fmt.Fprintf(w, "%-15s %7d\n", "total", s.Done)
	if info.malformedN > 0 {
		fmt.Fprintf(w, "%-15s %7d  (not enqueued)\n", "malformed rows", info.malformedN)
		for i, e := range info.malformed {
			if i == shownRowErrors {
				break
			}
			fmt.Fprintf(w, "  %v\n", &e)
		}
	}

	var scored, most int64
	for _, n := range s.Histogram {
		scored += n
		most = max(most, n)
	}
	if scored > 0 {
		fmt.Fprintf(w, "\nscores (%d scored, threshold %.2f)\n", scored, info.threshold)
		const width = 40
		tbin := results.HistogramBin(info.threshold)
		for i, n := range s.Histogram {
			cells := 0
			if most > 0 {
				cells = int((n*width + most - 1) / most)
			}
			mark := ""
			if i == tbin {
				mark = "  ← threshold"
			}
			lo, hi := float64(i)/results.HistogramBins, float64(i+1)/results.HistogramBins
			fmt.Fprintf(w, "  %.2f–%.2f %-*s %d%s\n", lo, hi, width, strings.Repeat("#", cells), n, mark)
		}
	}

	if len(s.Flips) > 0 {
		fmt.Fprintln(w, "\nflips (status changed from the key's previous result)")
		for _, from := range results.Statuses {
			for _, to := range results.Statuses {
				if n := s.Flips[results.FlipName(from, to)]; n > 0 {
					fmt.Fprintf(w, "  %-30s %d\n", string(from)+" → "+string(to), n)
				}
			}
		}
	}

	if info.results != "" {
		fmt.Fprintf(w, "\nresults: %s (one <key>.json per selfie)\n", displayLocation(info.results))
	}
	if info.batchID != "" {
		if info.embedded {
			fmt.Fprintf(w, "batch:   %s (in-process Redis is gone now; run with --redis to keep it for `livenessq results export --batch %s`)\n", info.batchID, info.batchID)
		} else {
			fmt.Fprintf(w, "batch:   %s — export with: livenessq results export --batch %s --format csv\n", info.batchID, info.batchID)
		}
	}
}

// displayLocation shows a file:// URL as a path and any other URL as is.
func displayLocation(raw string) string {
	u, err := url.Parse(raw)
	if err == nil && u.Scheme == "file" {
		return u.Path
	}
	return raw
}

// startRunEmulator serves the built-in emulator, with the sample set's rules and the
// given app key, on a loopback port; it returns the API URL and a stop function.
func startRunEmulator(appKey string, latency time.Duration) (string, func(), error) {
	emu := kairostest.New(kairostest.Config{AppID: runEmulatorAppID, AppKey: appKey, Rules: sampleRules(), Latency: latency})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("start the built-in emulator: %w", err)
	}
	srv := &http.Server{Handler: emu, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}
	return "http://" + ln.Addr().String() + "/v0.2/liveness-verification", stop, nil
}

// sampleCacheDir is where run writes the sample set when it runs outside the
// repository: the user's cache directory (a temporary one when there is none).
func sampleCacheDir() (string, error) {
	if base, err := os.UserCacheDir(); err == nil {
		return filepath.Join(base, "livenessq", "sample"), nil
	}
	return os.MkdirTemp("", "livenessq-sample-")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
