package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/results"
	"github.com/livenessq/livenessq/worker"
)

func init() {
	register(&command{name: "worker", summary: "run a worker process (serves /metrics, /healthz, /readyz)", run: runWorker})
}

// workerFlags are the settings of a worker, shared by `worker` and `run`.
type workerFlags struct {
	threshold       float64
	concurrency     int
	shutdownTimeout time.Duration
	pollInterval    time.Duration
	sizeCap         byteSize
	maxAttempts     int
	retryBase       time.Duration
	retryCap        time.Duration

	// The global API budget.
	rate         float64
	window       time.Duration
	burst        int
	headroom     time.Duration
	maxInFlight  int
	leaseTTL     time.Duration
	cooldown     time.Duration
	cooldownMax  time.Duration
	pauseAfter   time.Duration
	quota        int64
	quotaPeriod  time.Duration
	quotaResetAt string
}

// register adds the worker's flags; poll is the default poll interval.
func (f *workerFlags) register(fs *flagSet, poll time.Duration) {
	f.sizeCap = 15 << 20
	fs.Float64Var(&f.threshold, "threshold", enqueue.DefaultThreshold, "liveness threshold in (0, 1] for tasks that carry none")
	fs.bindEnv("threshold", "LIVENESSQ_THRESHOLD")
	fs.IntVar(&f.concurrency, "concurrency", 16, "tasks in flight in this process")
	fs.bindEnv("concurrency", "LIVENESSQ_CONCURRENCY")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight tasks may finish after SIGINT/SIGTERM before they return to the queue")
	fs.bindEnv("shutdown-timeout", "LIVENESSQ_SHUTDOWN_TIMEOUT")
	fs.DurationVar(&f.pollInterval, "poll-interval", poll, "how often an idle worker looks for tasks")
	fs.bindEnv("poll-interval", "LIVENESSQ_POLL_INTERVAL")
	fs.Var(&f.sizeCap, "size-cap", "largest selfie sent to the API, in bytes (suffixes KB, MB, KiB, MiB allowed)")
	fs.bindEnv("size-cap", "LIVENESSQ_SIZE_CAP")
	fs.IntVar(&f.maxAttempts, "max-attempts", 10, "attempts before a task is archived as failed (for tasks enqueued without a limit)")
	fs.bindEnv("max-attempts", "LIVENESSQ_MAX_ATTEMPTS")
	fs.DurationVar(&f.retryBase, "retry-base", time.Second, "first backoff ceiling after a transient failure (doubles per attempt, full jitter)")
	fs.bindEnv("retry-base", "LIVENESSQ_RETRY_BASE")
	fs.DurationVar(&f.retryCap, "retry-cap", 10*time.Minute, "largest backoff ceiling")
	fs.bindEnv("retry-cap", "LIVENESSQ_RETRY_CAP")

	fs.Float64Var(&f.rate, "rate", 0, "global API budget: calls per second across all workers; 0 = no rate limit")
	fs.bindEnv("rate", "LIVENESSQ_RATE")
	fs.DurationVar(&f.window, "rate-window", time.Second, "the window the API's rate limit is counted over")
	fs.bindEnv("rate-window", "LIVENESSQ_RATE_WINDOW")
	fs.IntVar(&f.burst, "burst", 1, "global API budget: calls that may start back to back")
	fs.bindEnv("burst", "LIVENESSQ_BURST")
	fs.DurationVar(&f.headroom, "rate-headroom", 8*time.Millisecond, "global API budget: margin for calls' trips to the API to differ by (network jitter, busy hosts); paces --rate × window/(window + headroom)")
	fs.bindEnv("rate-headroom", "LIVENESSQ_RATE_HEADROOM")
	fs.IntVar(&f.maxInFlight, "max-inflight", 0, "global API budget: API calls in flight across all workers; 0 = no cap")
	fs.bindEnv("max-inflight", "LIVENESSQ_MAX_INFLIGHT")
	fs.DurationVar(&f.leaseTTL, "lease-ttl", 10*time.Second, "how long a dead worker's in-flight slots stay taken")
	fs.bindEnv("lease-ttl", "LIVENESSQ_LEASE_TTL")
	fs.DurationVar(&f.cooldown, "cooldown", time.Minute, "how long every worker stops calling the API after a 403 (doubles per failed probe)")
	fs.bindEnv("cooldown", "LIVENESSQ_COOLDOWN")
	fs.DurationVar(&f.cooldownMax, "cooldown-max", 15*time.Minute, "cap on the doubled cooldown")
	fs.bindEnv("cooldown-max", "LIVENESSQ_COOLDOWN_MAX")
	fs.DurationVar(&f.pauseAfter, "pause-after", 30*time.Minute, "how long 403s may persist before the queue is paused")
	fs.bindEnv("pause-after", "LIVENESSQ_PAUSE_AFTER")
	fs.Int64Var(&f.quota, "quota", 0, "API calls allowed per quota period, paced over the period; 0 = no quota")
	fs.bindEnv("quota", "LIVENESSQ_QUOTA")
	fs.DurationVar(&f.quotaPeriod, "quota-period", 24*time.Hour, "length of a quota period")
	fs.bindEnv("quota-period", "LIVENESSQ_QUOTA_PERIOD")
	fs.StringVar(&f.quotaResetAt, "quota-reset-at", "", "when the quota resets: HH:MM (UTC) or an RFC 3339 time; default midnight UTC")
	fs.bindEnv("quota-reset-at", "LIVENESSQ_QUOTA_RESET_AT")
}

// validate checks the values, naming the flag at fault.
func (f *workerFlags) validate() error {
	if err := checkThreshold(f.threshold); err != nil {
		return err
	}
	switch {
	case f.concurrency < 1:
		return usagef("--concurrency: must be at least 1, got %d", f.concurrency)
	case f.shutdownTimeout < 0:
		return usagef("--shutdown-timeout: must not be negative, got %v", f.shutdownTimeout)
	case f.pollInterval <= 0:
		return usagef("--poll-interval: must be positive, got %v", f.pollInterval)
	case f.sizeCap <= 0:
		return usagef("--size-cap: must be positive, got %d", f.sizeCap)
	case f.maxAttempts < 1:
		return usagef("--max-attempts: must be at least 1, got %d", f.maxAttempts)
	case f.retryBase <= 0:
		return usagef("--retry-base: must be positive, got %v", f.retryBase)
	case f.retryCap < f.retryBase:
		return usagef("--retry-cap: must be at least --retry-base (%v), got %v", f.retryBase, f.retryCap)
	case f.rate < 0 || math.IsNaN(f.rate) || math.IsInf(f.rate, 0):
		return usagef("--rate: must be a number ≥ 0 (0 = no limit), got %v", f.rate)
	case f.window <= 0:
		return usagef("--rate-window: must be positive, got %v", f.window)
	case f.headroom <= 0 || f.headroom >= f.window:
		return usagef("--rate-headroom: must be positive and shorter than --rate-window (%v), got %v", f.window, f.headroom)
	case f.burst < 1:
		return usagef("--burst: must be at least 1, got %d", f.burst)
	case f.rate > 0 && f.rate*f.window.Seconds() <= float64(f.burst-1):
		return usagef("--burst: must be less than --rate × --rate-window + 1 (%v), got %d", f.rate*f.window.Seconds()+1, f.burst)
	case f.maxInFlight < 0:
		return usagef("--max-inflight: must be ≥ 0 (0 = no cap), got %d", f.maxInFlight)
	case f.leaseTTL <= 0:
		return usagef("--lease-ttl: must be positive, got %v", f.leaseTTL)
	case f.cooldown <= 0:
		return usagef("--cooldown: must be positive, got %v", f.cooldown)
	case f.cooldownMax < f.cooldown:
		return usagef("--cooldown-max: must be at least --cooldown (%v), got %v", f.cooldown, f.cooldownMax)
	case f.pauseAfter <= 0:
		return usagef("--pause-after: must be positive, got %v", f.pauseAfter)
	case f.quota < 0:
		return usagef("--quota: must be ≥ 0 (0 = no quota), got %d", f.quota)
	case f.quotaPeriod <= 0:
		return usagef("--quota-period: must be positive, got %v", f.quotaPeriod)
	}
	if _, err := f.resetAt(); err != nil {
		return err
	}
	return nil
}

// resetAt parses --quota-reset-at.
func (f *workerFlags) resetAt() (time.Time, error) {
	s := strings.TrimSpace(f.quotaResetAt)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("15:04", s); err == nil {
		return time.Date(2000, 1, 1, t.Hour(), t.Minute(), 0, 0, time.UTC), nil
	}
	return time.Time{}, usagef("--quota-reset-at: %q is neither HH:MM (UTC) nor an RFC 3339 time", f.quotaResetAt)
}

// budget builds the global API budget; pause pauses the queue for every worker.
func (f *workerFlags) budget(rdb redis.UniversalClient, pause func(context.Context, string) error, log zerolog.Logger) (*worker.Budget, error) {
	resetAt, err := f.resetAt()
	if err != nil {
		return nil, err
	}
	b, err := worker.NewBudget(worker.BudgetConfig{
		Redis: rdb, Rate: f.rate, Window: f.window, Burst: f.burst, Headroom: f.headroom, MaxInFlight: f.maxInFlight,
		LeaseTTL: f.leaseTTL, Cooldown: f.cooldown, CooldownMax: f.cooldownMax, PauseAfter: f.pauseAfter,
		Pause: pause, Quota: f.quota, QuotaPeriod: f.quotaPeriod, QuotaResetAt: resetAt, Logger: log,
	})
	if err != nil {
		return nil, usagef("budget flags: %v", err)
	}
	return b, nil
}

// config returns the worker.Config the flags describe; the caller fills in the
// connections.
func (f *workerFlags) config() worker.Config {
	return worker.Config{
		Concurrency:     f.concurrency,
		ShutdownTimeout: f.shutdownTimeout,
		Threshold:       f.threshold,
		Precheck:        worker.PrecheckConfig{MaxBytes: int64(f.sizeCap)},
		Retry:           worker.RetryPolicy{Base: f.retryBase, Cap: f.retryCap, MaxAttempts: f.maxAttempts},
		PollInterval:    f.pollInterval,
	}
}

func runWorker(ctx context.Context, env *environ, args []string) error {
	var c common
	var wf workerFlags
	var kf kairosFlags
	var httpAddr string
	fs := newFlagSet(env, "worker", "[flags]")
	c.registerConnection(fs)
	kf.register(fs)
	wf.register(fs, time.Second)
	fs.StringVar(&httpAddr, "http-addr", ":9090", "where /metrics, /healthz and /readyz are served; empty to serve none")
	fs.bindEnv("http-addr", "LIVENESSQ_HTTP_ADDR")
	c.registerLogging(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("worker: unexpected arguments %q", fs.Args())
	}
	if err := wf.validate(); err != nil {
		return err
	}
	logger, err := c.logger(env.stderr)
	if err != nil {
		return err
	}
	kc, err := kf.client(env, wf.concurrency)
	if err != nil {
		return err
	}
	// Pipelined: asynq and verdicts go through one of rdb's autopipeliners (cn.prdb), results
	// through the other (cn.srdb); the budget keeps its own round trips on rdb.
	cn, err := c.open(ctx, logger, true)
	if err != nil {
		return err
	}
	defer cn.close()
	rdb, prdb, src, res, store := cn.rdb, cn.prdb, cn.src, cn.res, cn.store
	budget, err := wf.budget(rdb, worker.QueuePauser(rdb, c.queue, logger), logger)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newBudgetCollector(budget),
		asynqmetrics.NewQueueMetricsCollector(asynq.NewInspectorFromRedisClient(rdb)),
	)
	// The asynq queue collector reports scrape errors through the standard logger.
	log.SetFlags(0)
	log.SetOutput(logger.With().Str("component", "metrics").Logger())

	cfg := wf.config()
	cfg.Redis, cfg.Storage, cfg.Results, cfg.Kairos, cfg.Budget = prdb, src, store, kc, budget
	metrics := worker.NewMetrics(reg)
	for _, st := range results.Statuses { // every status has a series from the start, for rate() and alerts
		metrics.Results.WithLabelValues(string(st))
	}
	cfg.Queue, cfg.Metrics, cfg.Logger = c.queue, metrics, logger
	w, err := worker.New(cfg)
	if err != nil {
		return usagef("worker: %v", err)
	}

	var hs *httpServer
	if httpAddr != "" {
		hs = newHTTPServer(httpAddr, reg, []readyCheck{redisCheck(rdb), storageCheck("storage", src), storageCheck("results", res)}, logger)
		addr, err := hs.Start()
		if err != nil {
			return err
		}
		logger.Info().Str("http_addr", addr).Msg("serving /metrics, /healthz, /readyz")
	}
	logger.Info().Str("redis", redactedURL(c.redisURL)).Str("storage", src.URL()).Str("results", res.URL()).
		Str("api_url", redactedURL(kf.apiURL)).Int("concurrency", wf.concurrency).Float64("rate", wf.rate).
		Int("max_inflight", wf.maxInFlight).Msg("worker starting")

	wh, err := webhookEnv(env)
	if err != nil {
		return err
	}
	stopWebhooks, err := startWebhooks(ctx, rdb, store, wh, logger)
	if err != nil {
		return err
	}
	if wh.secret != "" {
		logger.Info().Bool("allow_private", wh.allowPrivate).Msg("delivering completion callbacks")
	}
	runErr := w.Run(ctx)
	stopWebhooks()
	if hs != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = hs.Shutdown(sctx)
		cancel()
	}
	if runErr != nil {
		return fmt.Errorf("worker: %w", runErr)
	}
	logger.Info().Msg("worker exited")
	return nil
}

// autoPipelined returns rdb's two autopipeliners (go-redis), or rdb itself twice when
// the client has none. A worker's Redis traffic is many small commands from up to
// --concurrency tasks at once: through an autopipeliner, commands issued meanwhile share
// one round trip, which costs the worker and Redis fewer system calls per task. The
// first, for asynq and the verdicts, is the blocking face: asynq's dequeues and acks are
// on the path of every task, each waits for one batch, and the batch stream they share
// carries nothing heavier. The second, for the results store, is the asynchronous face:
// the store submits the commands of each step at once (results.Store), so that they
// join one batch, and its write scripts do not delay the next dequeue. Together, 2.7
// round trips per task rather than 5 (BENCHMARKS.md). The budget is left on the plain
// client: its calls are serialized per process anyway, and batching would only delay the
// moment a 403 closes the API to the other workers. Closing rdb stops both.
func autoPipelined(rdb redis.UniversalClient) (tasks, results redis.UniversalClient) {
	tasks, results = rdb, rdb
	if ap, err := rdb.AutoPipeline(); err == nil {
		tasks = ap
	}
	if ap, err := rdb.AsyncAutoPipeline(); err == nil {
		results = ap
	}
	return tasks, results
}

// redactedURL returns rawURL with any password hidden, for logs.
func redactedURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// checkThreshold validates a --threshold value.
func checkThreshold(t float64) error {
	if math.IsNaN(t) || t <= 0 || t > 1 {
		return usagef("--threshold: must be a number in (0, 1], got %v", t)
	}
	return nil
}

// byteSize is a flag holding a number of bytes: "15728640", "15MiB", "15MB", "512KiB".
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

// Set parses a size with an optional unit suffix (B, KB, MB, GB in powers of 1000;
// KiB, MiB, GiB in powers of 1024; case-insensitive).
func (b *byteSize) Set(s string) error {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"b", 1}}
	lower := strings.ToLower(s)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(lower, u.suffix) {
			mult, lower = u.mult, strings.TrimSpace(strings.TrimSuffix(lower, u.suffix))
			break
		}
	}
	n, err := strconv.ParseFloat(lower, 64)
	if err != nil || n < 0 || math.IsNaN(n) || n*float64(mult) > math.MaxInt64/2 {
		return errors.New("want a byte count such as 15728640, 15MiB or 500KB")
	}
	*b = byteSize(n * float64(mult))
	return nil
}
