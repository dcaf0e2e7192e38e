package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/kairos"
	"github.com/livenessq/livenessq/results"
	"github.com/livenessq/livenessq/storage"
)

// Verifier is the paid call: *kairos.Client satisfies it.
type Verifier interface {
	Verify(ctx context.Context, s kairos.Selfie, threshold float64) (*kairos.Result, error)
}

var _ Verifier = (*kairos.Client)(nil)

// Config configures a Worker.
type Config struct {
	// Redis holds the queue, the budget and the results; required.
	Redis redis.UniversalClient
	// Storage is where selfies are read; required. Tasks naming another location are
	// bad tasks.
	Storage *storage.Bucket
	// Results writes the result records; required.
	Results *results.Store
	// Kairos makes the API calls; required.
	Kairos Verifier
	// Budget is the global API budget shared by every worker; default: a budget on
	// Redis with no rate or concurrency limit, which still shares the 403 cooldown.
	Budget *Budget
	// Queue is the asynq queue served; default enqueue.DefaultQueue.
	Queue string
	// Concurrency is the number of tasks in flight in this process; default 16.
	Concurrency int
	// ShutdownTimeout is how long in-flight tasks may run after a stop signal before they
	// are returned to the queue; default 30 s.
	ShutdownTimeout time.Duration
	// Threshold applies to tasks whose payload carries none; default 0.6.
	Threshold float64
	// Precheck bounds images before any paid call; see PrecheckConfig for defaults.
	Precheck PrecheckConfig
	// Retry is the backoff for transient failures; see RetryPolicy for defaults.
	Retry RetryPolicy
	// PollInterval is how often an idle worker looks for tasks (asynq's
	// TaskCheckInterval and DelayedTaskCheckInterval); default 1 s. Tests use ~20 ms.
	PollInterval time.Duration
	// Metrics receives the worker's series; default: new series, unregistered.
	Metrics *Metrics
	// Logger receives one event per line, with task id, key and request id.
	Logger zerolog.Logger
}

// Worker is an asynq server running the liveness:verify handler.
type Worker struct {
	cfg     Config
	log     zerolog.Logger
	metrics *Metrics
	budget  *Budget
	buckets map[string]*storage.Bucket
	pause   func(ctx context.Context, reason string) error

	mu      sync.Mutex
	srv     *asynq.Server
	started bool
	stopped bool
}

// New applies defaults to cfg, validates it and returns a Worker ready to Start.
func New(cfg Config) (*Worker, error) {
	switch {
	case cfg.Redis == nil:
		return nil, errors.New("worker: Config.Redis is required")
	case cfg.Storage == nil:
		return nil, errors.New("worker: Config.Storage is required")
	case cfg.Results == nil:
		return nil, errors.New("worker: Config.Results is required")
	case cfg.Kairos == nil:
		return nil, errors.New("worker: Config.Kairos is required")
	}
	if cfg.Queue == "" {
		cfg.Queue = enqueue.DefaultQueue
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 16
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.Threshold == 0 {
		cfg.Threshold = 0.6
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = time.Second
	}
	cfg.Precheck.applyDefaults()
	cfg.Retry.applyDefaults()
	switch {
	case cfg.Concurrency < 1:
		return nil, fmt.Errorf("worker: concurrency must be at least 1, got %d", cfg.Concurrency)
	case cfg.Threshold < 0 || cfg.Threshold > 1 || cfg.Threshold != cfg.Threshold:
		return nil, fmt.Errorf("worker: threshold must be within [0, 1], got %v", cfg.Threshold)
	case cfg.ShutdownTimeout < 0 || cfg.PollInterval < 0:
		return nil, errors.New("worker: durations must not be negative")
	}
	if err := cfg.Precheck.validate(); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if err := cfg.Retry.validate(); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	w := &Worker{
		cfg:     cfg,
		log:     cfg.Logger.With().Str("component", "worker").Logger(),
		metrics: cfg.Metrics,
		budget:  cfg.Budget,
		buckets: map[string]*storage.Bucket{cfg.Storage.URL(): cfg.Storage},
		pause:   QueuePauser(cfg.Redis, cfg.Queue, cfg.Logger.With().Str("component", "worker").Logger()),
	}
	if w.metrics == nil {
		w.metrics = NewMetrics(nil)
	}
	if w.budget == nil {
		b, err := NewBudget(BudgetConfig{Redis: cfg.Redis, Logger: cfg.Logger, Pause: w.pause})
		if err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
		w.budget = b
	}
	return w, nil
}

// Collectors returns the worker's Prometheus collectors (for a registry of the caller's).
func (m *Metrics) Collectors() []prometheus.Collector { return m.collectorList }

// Start starts serving the queue; it returns once the server runs. Starting twice is an
// error; starting after Shutdown is refused.
func (w *Worker) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return errors.New("worker: already shut down")
	}
	if w.started {
		return errors.New("worker: already started")
	}
	srv := asynq.NewServerFromRedisClient(w.cfg.Redis, asynq.Config{
		Concurrency:              w.cfg.Concurrency,
		Queues:                   map[string]int{w.cfg.Queue: 1},
		ShutdownTimeout:          w.cfg.ShutdownTimeout,
		TaskCheckInterval:        w.cfg.PollInterval,
		DelayedTaskCheckInterval: w.cfg.PollInterval,
		RetryDelayFunc:           w.retryDelay,
		IsFailure:                isFailure,
		Logger:                   asynqLogger{w.log},
		LogLevel:                 asynq.WarnLevel,
		BaseContext:              func() context.Context { return context.WithoutCancel(ctx) },
	})
	mux := asynq.NewServeMux()
	mux.Handle(enqueue.TaskType, w)
	if err := w.budget.Start(ctx); err != nil {
		return fmt.Errorf("worker: start budget: %w", err)
	}
	if err := srv.Start(mux); err != nil {
		return fmt.Errorf("worker: start asynq server: %w", err)
	}
	w.srv, w.started = srv, true
	w.log.Info().Str("queue", w.cfg.Queue).Int("concurrency", w.cfg.Concurrency).Msg("worker started")
	return nil
}

// Run starts the worker and serves until ctx ends, then shuts down gracefully: it stops
// taking tasks, lets in-flight ones finish within ShutdownTimeout and returns the rest
// to the queue.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return w.Shutdown(context.Background())
}

// Shutdown stops the worker gracefully. Safe to call twice, or before Start.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return nil
	}
	w.stopped = true
	if w.srv != nil {
		w.srv.Shutdown()
		w.log.Info().Msg("worker stopped")
	}
	return w.budget.Shutdown(ctx)
}

// isFailure tells asynq which errors use up one of the task's attempts: only the
// selfie's own transient failures. Budget waits, usage limits, refused credentials and
// a worker that died holding the task (lease expired) do not.
func isFailure(err error) bool {
	var nf *notFailure
	if errors.As(err, &nf) || errors.Is(err, asynq.ErrLeaseExpired) {
		return false
	}
	return true
}

// retryDelay is asynq's RetryDelayFunc: the one place the wait before a retry is decided.
func (w *Worker) retryDelay(n int, err error, _ *asynq.Task) time.Duration {
	var nf *notFailure
	var tr *transient
	var d time.Duration
	switch {
	case errors.As(err, &nf) && errors.Is(err, ErrUsageLimited):
		// Wait out the shared cooldown (plus jitter), without using an attempt.
		d = w.cfg.Retry.Delay(0, w.budget.cooldownLeft())
	case errors.As(err, &nf) && nf.delay > 0:
		d = w.cfg.Retry.Delay(0, nf.delay)
	case errors.As(err, &tr):
		d = w.cfg.Retry.Delay(n, tr.retryAfter)
	default:
		d = w.cfg.Retry.Delay(n, 0)
	}
	w.metrics.RetryDelay.Observe(d.Seconds())
	w.log.Debug().Int("retried", n).Dur("delay", d).Err(err).Msg("retry scheduled")
	return d
}

// pauseForCredentials pauses the queue when the API refuses our credentials: every
// other task would fail the same way. A refusal of a call admitted before the latest such
// pause is not a new one: it comes from a call that was in flight when an operator fixed
// the key and resumed, and must not pause the queue again.
func (w *Worker) pauseForCredentials(ctx context.Context, cause error, admittedAt time.Time) {
	ctx = context.WithoutCancel(ctx)
	mark, err := authPauseScript.Run(ctx, w.cfg.Redis, []string{budgetKeyAuthBarrier}, admittedAt.UnixMicro()).Int64()
	if err == nil && mark == 0 {
		return
	}
	status := "no status"
	var ae *kairos.APIError
	if errors.As(cause, &ae) {
		status = fmt.Sprintf("HTTP %d", ae.StatusCode)
	}
	_ = w.pause(ctx, fmt.Sprintf("Kairos refused the credentials (%s); fix KAIROS_APP_ID/KAIROS_APP_KEY, then run `livenessq resume`", status))
	// A resume between the barrier and the pause (the key was fixed while this refusal
	// was handled) supersedes it: the pause it would otherwise leave behind is undone.
	if err != nil {
		return
	}
	if resumed, rerr := w.cfg.Redis.Get(ctx, budgetKeyAuthResumed).Int64(); rerr == nil && resumed >= mark {
		_ = w.cfg.Redis.Del(ctx, budgetKeyPaused).Err()
		if uerr := asynq.NewInspectorFromRedisClient(w.cfg.Redis).UnpauseQueue(w.cfg.Queue); uerr != nil && !containsFold(uerr.Error(), "not paused") {
			w.log.Warn().Err(uerr).Msg("undo a pause that a resume superseded")
		}
	}
}

// budgetKeyAuthBarrier holds when (Redis clock, µs) the queue was last paused for
// refused credentials, or last resumed: a refusal of a call admitted before it is not
// news. budgetKeyAuthResumed holds when it was last resumed.
const (
	budgetKeyAuthBarrier = budgetKeyPrefix + "auth_barrier"
	budgetKeyAuthResumed = budgetKeyPrefix + "auth_resumed"
)

// authPauseScript moves the barrier to now unless the refused call (admitted at ARGV[1],
// µs) was admitted before it. Returns the new barrier when the caller should pause the
// queue, else 0.
var authPauseScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local at = tonumber(redis.call('GET', KEYS[1]) or '0')
if at >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], string.format('%d', now), 'EX', 604800)
return now
`)

// authBarrierScript moves the barrier and the resume mark to now (on resume).
var authBarrierScript = redis.NewScript(`
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
redis.call('SET', KEYS[1], now, 'EX', 604800)
redis.call('SET', KEYS[2], now, 'EX', 604800)
return 1
`)

// QueuePauser returns a function that pauses queue for every worker (asynq's queue
// pause), records reason where `livenessq status` shows it and `livenessq resume`
// clears it, and logs it as one error line per process and reason. It is the Pause of a
// BudgetConfig, and what a Worker does when the API refuses its credentials.
func QueuePauser(rdb redis.UniversalClient, queue string, log zerolog.Logger) func(ctx context.Context, reason string) error {
	insp := asynq.NewInspectorFromRedisClient(rdb)
	var mu sync.Mutex
	logged := map[string]bool{}
	return func(ctx context.Context, reason string) error {
		err := insp.PauseQueue(queue)
		if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) && !containsFold(err.Error(), "already paused") {
			return fmt.Errorf("pause queue %q: %w", queue, err)
		}
		if err := rdb.HSet(context.WithoutCancel(ctx), budgetKeyPaused, "reason", reason, "queue", queue,
			"at", time.Now().UnixMicro()).Err(); err != nil {
			log.Warn().Err(err).Msg("record the pause reason")
		}
		mu.Lock()
		first := !logged[reason]
		logged[reason] = true
		mu.Unlock()
		if first {
			log.Error().Str("queue", queue).Msg("queue paused: " + reason)
		}
		return nil
	}
}
