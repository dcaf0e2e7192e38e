package enqueue

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/livenessq/livenessq/results"
)

// Defaults of Config.
const (
	// DefaultMaxRetry is the asynq retry count of a task when Config.MaxRetry is 0: 9
	// retries, so 10 attempts in all, the documented default.
	DefaultMaxRetry = 9
	// DefaultRetention is how long a completed task is kept when Config.Retention is 0.
	DefaultRetention = 24 * time.Hour
	// DefaultInFlight is the number of concurrent enqueues when Config.InFlight is 0.
	DefaultInFlight = 32
)

// MaxReportedErrors is the number of row errors a Summary lists; it counts them all.
const MaxReportedErrors = 100

const (
	// flushEvery and flushInterval bound how far the batch's counters in Redis lag
	// behind: they are updated after this many tasks or this long, whichever is first.
	flushEvery    = 500
	flushInterval = 250 * time.Millisecond
	// finalAttempts and finalTimeout bound the last counter update of a run, which is
	// made even when its context has ended.
	finalAttempts = 4
	finalTimeout  = 5 * time.Second
)

// BatchRecorder records batches and their enqueue counters. *results.Store implements it.
type BatchRecorder interface {
	// CreateBatch records a batch, or returns false leaving an existing one as it is.
	CreateBatch(ctx context.Context, info results.BatchInfo) (created bool, err error)
	// AddEnqueued adds to the batch's counters of enqueued tasks, tasks already queued
	// and malformed rows.
	AddEnqueued(ctx context.Context, id string, enqueued, duplicates, malformed int64) error
	// FinishEnqueue marks the batch's source fully enqueued and reports whether every
	// result was already in.
	FinishEnqueue(ctx context.Context, id string) (completed bool, err error)
}

var _ BatchRecorder = (*results.Store)(nil)

// Config configures a Client.
type Config struct {
	// Redis is the Redis the asynq queues live in. Required. The Client shares it and
	// never closes it.
	Redis redis.UniversalClient
	// Batches records every run's batch and its counters. Required; normally a
	// *results.Store on the same Redis.
	Batches BatchRecorder
	// Queue is the asynq queue tasks go to. Default DefaultQueue ("liveness").
	Queue string
	// MaxRetry is the number of times asynq retries a failed task before archiving it.
	// Default DefaultMaxRetry (9, i.e. 10 attempts); it must not be negative.
	MaxRetry int
	// Retention is how long asynq keeps a completed task. Default DefaultRetention (24h).
	// While a task is kept (pending, running, retrying, archived, or completed within its
	// retention), enqueueing the same key in the same batch again finds it and adds no
	// duplicate; this is what makes re-running an enqueue safe. After that the id is free
	// again and a re-run would verify the key again. Must be at least one second.
	Retention time.Duration
	// InFlight is the number of enqueues in flight at once. Default DefaultInFlight (32).
	InFlight int
	// Timeout, when > 0, is the time a worker may spend on one task (asynq.Timeout).
	// Default 0: asynq's own default (30 minutes).
	Timeout time.Duration
	// Logger receives one event when a run starts and one when it ends, and the first
	// MaxReportedErrors row errors of each run. Default: the zero Logger, which writes
	// nothing.
	Logger zerolog.Logger
}

// Client enqueues verification tasks, in batches, idempotently. It is safe for concurrent
// use; Go services call it directly and the HTTP API is built on it.
type Client struct {
	rdb      redis.UniversalClient
	batches  BatchRecorder
	opts     []asynq.Option
	inFlight int
	senders  int // pipelines in flight at once; 0: no pipelining (benchmarks compare)
	log      zerolog.Logger
	closed   atomic.Bool
}

// pipelineSenders is the number of pipelines a run keeps in flight.
const pipelineSenders = 2

// New returns a Client after applying cfg's defaults, or an error naming the missing or
// bad field. It makes no request.
func New(cfg Config) (*Client, error) {
	if cfg.Redis == nil {
		return nil, errors.New("enqueue: Config.Redis is required")
	}
	if cfg.Batches == nil {
		return nil, errors.New("enqueue: Config.Batches is required")
	}
	if cfg.Queue == "" {
		cfg.Queue = DefaultQueue
	}
	switch {
	case cfg.MaxRetry == 0:
		cfg.MaxRetry = DefaultMaxRetry
	case cfg.MaxRetry < 0:
		return nil, fmt.Errorf("enqueue: Config.MaxRetry %d is negative", cfg.MaxRetry)
	}
	switch {
	case cfg.Retention == 0:
		cfg.Retention = DefaultRetention
	case cfg.Retention < time.Second:
		return nil, fmt.Errorf("enqueue: Config.Retention %v is under one second", cfg.Retention)
	}
	switch {
	case cfg.InFlight == 0:
		cfg.InFlight = DefaultInFlight
	case cfg.InFlight < 0:
		return nil, fmt.Errorf("enqueue: Config.InFlight %d is negative", cfg.InFlight)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("enqueue: Config.Timeout %v is negative", cfg.Timeout)
	}
	opts := []asynq.Option{
		asynq.Queue(cfg.Queue),
		asynq.MaxRetry(cfg.MaxRetry),
		asynq.Retention(cfg.Retention),
	}
	if cfg.Timeout > 0 {
		opts = append(opts, asynq.Timeout(cfg.Timeout))
	}
	return &Client{
		rdb:      cfg.Redis,
		batches:  cfg.Batches,
		opts:     slices.Clip(opts), // workers append to it concurrently
		inFlight: cfg.InFlight,
		senders:  pipelineSenders,
		log:      cfg.Logger,
	}, nil
}

// Close makes later calls fail with ErrClosed. It does not close Config.Redis, which the
// caller owns. Calling it more than once is safe.
func (c *Client) Close() error {
	c.closed.Store(true)
	return nil
}

// Batch describes an enqueue run's batch.
type Batch struct {
	// ID names the batch; empty means a new one (results.NewBatchID). Re-using the id of
	// an earlier run resumes it: tasks already queued are counted as duplicates.
	ID string
	// Storage is the canonical location of the storage the keys live in: a
	// storage.Bucket's URL(). Required; it must not carry credentials.
	Storage string
	// Source describes what is enqueued, for people: "prefix selfies/", "manifest
	// keys.csv".
	Source string
	// Threshold is the liveness threshold of rows that give none. 0 means
	// DefaultThreshold (0.6); otherwise it must be in (0, 1].
	Threshold float64
	// CallbackURL, when set, is recorded with the batch for the completion callback. It
	// must be an absolute http(s) URL; which addresses may be called back is the
	// deliverer's decision.
	CallbackURL string
}

// Progress is a snapshot of a running enqueue.
type Progress struct {
	BatchID string `json:"batch_id"`
	// Read counts the source's items and row errors so far.
	Read int64 `json:"read"`
	// Enqueued counts new tasks; Duplicates, tasks that were already queued; Malformed,
	// rows that could not be enqueued.
	Enqueued   int64 `json:"enqueued"`
	Duplicates int64 `json:"duplicates"`
	Malformed  int64 `json:"malformed"`
	// Elapsed is the time since the run started (JSON: nanoseconds).
	Elapsed time.Duration `json:"elapsed_ns"`
}

// Summary is the outcome of an enqueue run.
type Summary struct {
	// BatchID is the run's batch, generated when Batch.ID was empty.
	BatchID string `json:"batch_id"`
	// Created is true when this run created the batch record, false when it resumed an
	// existing batch.
	Created bool `json:"created"`
	// Enqueued counts new tasks; Duplicates, tasks that were already queued (a re-run,
	// or a key listed twice); Malformed, rows that could not be enqueued.
	Enqueued   int64 `json:"enqueued"`
	Duplicates int64 `json:"duplicates"`
	Malformed  int64 `json:"malformed"`
	// Errors lists the first MaxReportedErrors row errors, by line; Malformed counts all.
	Errors []RowError `json:"errors,omitempty"`
	// Finished is true when the whole source was enqueued and the batch marked so
	// (results.Store.FinishEnqueue); false when the run stopped early.
	Finished bool `json:"finished"`
	// Completed is true when, as enqueueing finished, every task of the batch already had
	// its result: then no worker will see the batch complete, and whoever delivers the
	// completion callback must do it now.
	Completed bool `json:"completed"`
	// Duration is the run's wall time (JSON: nanoseconds).
	Duration time.Duration `json:"duration_ns"`
}

// Enqueue enqueues every item of src as a verification task of batch b, InFlight at a
// time, and returns what it did.
//
// It creates the batch record (or resumes it, when b.ID names an existing batch), then
// enqueues each item with the task id TaskID(batch, b.Storage, key), so that an item
// already queued by an earlier run of the same batch is counted as a duplicate, not
// added again. The batch's counters in Redis are updated as it goes (every 500 tasks or
// 250 ms) and at the end, so a re-run after a crash counts only the tasks it added. Row
// errors of the source, and items whose key or threshold is invalid, are counted as
// malformed and reported in Summary.Errors; they do not stop the run.
//
// When the source ends without a fatal error, the batch is marked fully enqueued
// (Summary.Finished). Otherwise (a fatal source error, a Redis error, ctx ended) Enqueue
// stops, still records the counts so far, and returns the error with the Summary of what
// was done; running it again with the same batch id resumes it. progress, when not nil,
// is called from one goroutine at a time as the counters are updated, and once at the
// end. Memory does not grow with the number of items.
func (c *Client) Enqueue(ctx context.Context, b Batch, src Source, progress func(Progress)) (Summary, error) {
	return c.run(ctx, b, src, progress, runOptions{level: zerolog.InfoLevel})
}

// EnqueueOne enqueues one verification of key in the storage at storageURL, with
// threshold (0 means DefaultThreshold), in batch batchID (empty: a new batch). It returns
// the task id and the batch id. The key and threshold are checked before anything is
// written (errors wrap ErrBadKey or ErrBadThreshold). A key already queued in that batch
// is not added again and its task id is returned without error. A batch this call creates
// is marked fully enqueued; an existing batch is left open for its other producers.
func (c *Client) EnqueueOne(ctx context.Context, storageURL, key string, threshold float64, batchID string) (taskID, batch string, err error) {
	if err := ValidateKey(key); err != nil {
		return "", batchID, err
	}
	if threshold != 0 {
		if err := ValidateThreshold(threshold); err != nil {
			return "", batchID, err
		}
	}
	b := Batch{ID: batchID, Storage: storageURL, Source: "single key", Threshold: threshold}
	sum, err := c.run(ctx, b, Keys(key), nil, runOptions{finishIfCreated: true, level: zerolog.DebugLevel})
	if err != nil {
		return "", sum.BatchID, err
	}
	if len(sum.Errors) > 0 {
		return "", sum.BatchID, sum.Errors[0].Err
	}
	return TaskID(sum.BatchID, storageURL, key), sum.BatchID, nil
}

// runOptions vary a run between Enqueue and EnqueueOne.
type runOptions struct {
	// finishIfCreated marks the batch fully enqueued only when the run created it.
	finishIfCreated bool
	// level is the level of the run's start and end events.
	level zerolog.Level
}

// run is Enqueue and EnqueueOne.
func (c *Client) run(ctx context.Context, b Batch, src Source, progress func(Progress), o runOptions) (Summary, error) {
	start := time.Now()
	sum := Summary{BatchID: b.ID}
	if c.closed.Load() {
		return sum, ErrClosed
	}
	if b.ID == "" {
		b.ID = results.NewBatchID()
		sum.BatchID = b.ID
	}
	if err := validateBatchID(b.ID); err != nil {
		return sum, err
	}
	if err := validateStorage(b.Storage); err != nil {
		return sum, err
	}
	if b.Threshold == 0 {
		b.Threshold = DefaultThreshold
	}
	if err := ValidateThreshold(b.Threshold); err != nil {
		return sum, fmt.Errorf("batch %s: %w", b.ID, err)
	}
	if b.CallbackURL != "" {
		if u, err := url.Parse(b.CallbackURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return sum, fmt.Errorf("%w: callback URL must be an absolute http(s) URL", ErrBadBatch)
		}
	}

	created, err := c.batches.CreateBatch(ctx, results.BatchInfo{
		ID:          b.ID,
		Source:      b.Source,
		Storage:     b.Storage,
		Threshold:   b.Threshold,
		CreatedAt:   start.UTC(),
		CallbackURL: b.CallbackURL,
	})
	if err != nil {
		return sum, fmt.Errorf("enqueue batch %s: %w", b.ID, err)
	}
	sum.Created = created
	log := c.log.With().Str("batch_id", b.ID).Logger()
	log.WithLevel(o.level).Str("source", b.Source).Str("storage", b.Storage).Bool("resumed", !created).Msg("enqueue started")

	r := &runState{c: c, b: b, start: start, log: log, progress: progress, kick: make(chan struct{}, 1)}
	err = r.do(ctx, src)

	sum.Enqueued, sum.Duplicates, sum.Malformed = r.enqueued.Load(), r.duplicates.Load(), r.malformed.Load()
	sum.Errors = r.errs
	slices.SortStableFunc(sum.Errors, func(a, b RowError) int { return a.Line - b.Line })
	if err == nil && (created || !o.finishIfCreated) {
		sum.Completed, err = c.batches.FinishEnqueue(ctx, b.ID)
		if err != nil {
			err = fmt.Errorf("enqueue batch %s: %w", b.ID, err)
		}
		sum.Finished = err == nil
	}
	sum.Duration = time.Since(start)
	ev := log.WithLevel(o.level)
	if err != nil {
		ev = log.Warn().Err(err)
	}
	ev.Int64("enqueued", sum.Enqueued).Int64("duplicates", sum.Duplicates).Int64("malformed", sum.Malformed).
		Bool("finished", sum.Finished).Dur("duration", sum.Duration).Msg("enqueue ended")
	return sum, err
}

// runState is one run of Enqueue.
type runState struct {
	c        *Client
	b        Batch
	start    time.Time
	log      zerolog.Logger
	progress func(Progress)

	read, enqueued, duplicates, malformed atomic.Int64
	unflushed                             atomic.Int64 // tasks counted since the last flush
	kick                                  chan struct{}

	mu   sync.Mutex
	errs []RowError // the first MaxReportedErrors

	// flushed is what the batch record holds; only the flusher touches it.
	flushed struct{ enqueued, duplicates, malformed int64 }
}

// do feeds src to the enqueue workers, keeps the batch's counters up to date and
// returns the first fatal error (of the source, of Redis, or ctx's).
func (r *runState) do(parent context.Context, src Source) error {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)

	// The flusher updates the batch's counters and reports progress.
	flushDone := make(chan struct{})
	stopFlush := make(chan struct{})
	go func() {
		defer close(flushDone)
		t := time.NewTicker(flushInterval)
		defer t.Stop()
		for {
			select {
			case <-stopFlush:
				return
			case <-t.C:
			case <-r.kick:
			}
			p, changed, err := r.flush(ctx)
			if err != nil && ctx.Err() == nil {
				r.log.Warn().Err(err).Msg("update batch counters (will retry)")
			}
			if changed && r.progress != nil {
				r.progress(p)
			}
		}
	}()

	// The workers' enqueue scripts go to Redis in pipelines (see autoPipeline).
	var aq *asynq.Client
	if r.c.senders > 0 {
		pipe := startAutoPipeline(r.c.rdb, r.c.senders)
		defer pipe.stop() // after the workers, which are its only callers
		aq = asynq.NewClientFromRedisClient(pipe)
	} else {
		aq = asynq.NewClientFromRedisClient(r.c.rdb)
	}

	// Workers are started as they are needed, up to InFlight: a send that finds none
	// idle starts one, so a small run stays small.
	items := make(chan Item)
	var wg sync.WaitGroup
	workers := 0
	var fatal error
read:
	for it, err := range src {
		if ctx.Err() != nil {
			break
		}
		r.read.Add(1)
		if err != nil {
			var re *RowError
			if !errors.As(err, &re) {
				fatal = fmt.Errorf("enqueue batch %s: read source: %w", r.b.ID, err)
				break
			}
			r.rowError(*re)
			continue
		}
		select {
		case items <- it:
			continue
		default:
		}
		if workers < r.c.inFlight {
			workers++
			wg.Go(func() { r.work(ctx, aq, items, cancel) })
		}
		select {
		case items <- it:
		case <-ctx.Done():
			break read
		}
	}
	close(items)
	wg.Wait()
	close(stopFlush)
	<-flushDone

	// The last update must happen even when ctx has ended, or a re-run would count the
	// tasks of this run as duplicates.
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(parent), finalTimeout)
	defer fcancel()
	var ferr error
	for attempt := range finalAttempts {
		if _, _, ferr = r.flush(fctx); ferr == nil {
			break
		}
		r.log.Warn().Err(ferr).Msg("update batch counters")
		if attempt+1 < finalAttempts {
			select {
			case <-time.After(time.Duration(attempt+1) * 100 * time.Millisecond):
			case <-fctx.Done():
			}
		}
	}
	if ferr != nil {
		ferr = fmt.Errorf("enqueue batch %s: %w", r.b.ID, ferr)
	}
	if r.progress != nil {
		r.progress(r.snapshot())
	}
	if fatal == nil {
		fatal = context.Cause(ctx)
	}
	return errors.Join(fatal, ferr)
}

// work enqueues items until the channel closes; a Redis error cancels the run.
func (r *runState) work(ctx context.Context, aq *asynq.Client, items <-chan Item, cancel context.CancelCauseFunc) {
	for it := range items {
		if ctx.Err() != nil {
			continue // drain: the producer is stopping
		}
		thr := r.b.Threshold
		if it.Threshold != nil {
			thr = *it.Threshold
		}
		task, err := NewVerifyTask(Payload{Storage: r.b.Storage, Key: it.Key, Threshold: &thr, BatchID: r.b.ID})
		if err != nil {
			r.rowError(RowError{Line: it.Line, Key: it.Key, Err: unwrapTask(err)})
			continue
		}
		_, err = aq.EnqueueContext(ctx, task, append(r.c.opts, asynq.TaskID(TaskID(r.b.ID, r.b.Storage, it.Key)))...)
		switch {
		case err == nil:
			r.enqueued.Add(1)
		case errors.Is(err, asynq.ErrTaskIDConflict), errors.Is(err, asynq.ErrDuplicateTask):
			r.duplicates.Add(1)
		case ctx.Err() != nil:
			continue // not counted: a re-run will find it, if it was added
		default:
			cancel(fmt.Errorf("enqueue batch %s: key %q: %w", r.b.ID, it.Key, err))
			continue
		}
		r.count()
	}
}

// unwrapTask strips NewVerifyTask's prefix off a validation error, for row errors.
func unwrapTask(err error) error {
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	return err
}

// count notes one more counted task and wakes the flusher every flushEvery.
func (r *runState) count() {
	if r.unflushed.Add(1)%flushEvery == 0 {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// rowError counts a malformed row and keeps it if there is room.
func (r *runState) rowError(e RowError) {
	r.malformed.Add(1)
	r.count()
	r.mu.Lock()
	keep := len(r.errs) < MaxReportedErrors
	if keep {
		r.errs = append(r.errs, e)
	}
	r.mu.Unlock()
	if keep {
		r.log.Warn().Int("line", e.Line).Str("key", e.Key).Err(e.Err).Msg("row skipped")
	}
}

// snapshot returns the run's progress.
func (r *runState) snapshot() Progress {
	return Progress{
		BatchID:    r.b.ID,
		Read:       r.read.Load(),
		Enqueued:   r.enqueued.Load(),
		Duplicates: r.duplicates.Load(),
		Malformed:  r.malformed.Load(),
		Elapsed:    time.Since(r.start),
	}
}

// flush adds what was counted since the last flush to the batch record and returns the
// progress it recorded, and whether anything changed. Only one goroutine calls it at a
// time.
func (r *runState) flush(ctx context.Context) (p Progress, changed bool, err error) {
	p = r.snapshot()
	d := r.flushed
	de, dd, dm := p.Enqueued-d.enqueued, p.Duplicates-d.duplicates, p.Malformed-d.malformed
	if de == 0 && dd == 0 && dm == 0 {
		return p, false, nil
	}
	if err := r.c.batches.AddEnqueued(ctx, r.b.ID, de, dd, dm); err != nil {
		return p, false, err
	}
	r.flushed.enqueued, r.flushed.duplicates, r.flushed.malformed = p.Enqueued, p.Duplicates, p.Malformed
	r.unflushed.Add(-(de + dd + dm))
	return p, true, nil
}
