package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptrace"
	"path"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/kairos"
	"github.com/livenessq/livenessq/results"
	"github.com/livenessq/livenessq/storage"
)

// Errors a handler returns to asynq for a task that waits without using up an attempt.
var (
	// ErrServicePaused: the API refused our credentials; the queue is paused until an
	// operator fixes them and runs `livenessq resume`.
	ErrServicePaused = errors.New("worker: API credentials refused; queue paused")
	// ErrUsageLimited: the API's usage limit is reached; the task waits out the cooldown.
	ErrUsageLimited = errors.New("worker: API usage limit reached; waiting for the cooldown")
)

// notFailure wraps an error that is not the selfie's fault: it is retried without
// counting against the task's attempts (asynq IsFailure returns false).
type notFailure struct {
	err   error
	delay time.Duration // how long the task should wait; 0 lets the policy decide
}

func (e *notFailure) Error() string { return e.err.Error() }
func (e *notFailure) Unwrap() error { return e.err }

// transient wraps a retryable error with the reason shown in metrics and the wait the
// API asked for, if any.
type transient struct {
	err        error
	reason     string
	retryAfter time.Duration
}

func (e *transient) Error() string { return e.err.Error() }
func (e *transient) Unwrap() error { return e.err }

// task is one attempt at one task, with what it has learned so far.
type task struct {
	id       string
	payload  enqueue.Payload
	attempt  int // 1-based
	last     bool
	log      zerolog.Logger
	rec      results.Record
	verdict  *verdict
	paid     bool // verdict came from this attempt's API call, not from Redis
	prev     chan previous
	started  time.Time
	objectOK bool
}

// previous is the key's earlier result, read ahead of the write.
type previous struct {
	p   *results.Previous
	err error
}

// ProcessTask handles one liveness:verify task: it is the asynq handler. Permanent
// outcomes are written as results and return nil (or asynq.SkipRetry for a bad payload
// once written); transient failures return an error for the retry policy.
func (w *Worker) ProcessTask(ctx context.Context, t *asynq.Task) error {
	id, _ := asynq.GetTaskID(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, ok := asynq.GetMaxRetry(ctx)
	if !ok {
		maxRetry = w.cfg.Retry.MaxAttempts - 1
	}
	tk := &task{id: id, attempt: retried + 1, last: retried >= maxRetry, started: time.Now()}
	tk.log = w.log.With().Str("task_id", id).Int("attempt", tk.attempt).Logger()

	p, err := enqueue.ParsePayload(t.Payload())
	if err != nil {
		return w.badTask(ctx, tk, t.Payload(), err)
	}
	tk.payload = p
	tk.log = tk.log.With().Str("key", p.Key).Str("batch_id", p.BatchID).Logger()
	threshold := w.cfg.Threshold
	if p.Threshold != nil {
		threshold = *p.Threshold
	}
	tk.rec = results.Record{Key: p.Key, BatchID: p.BatchID, Threshold: threshold, Attempts: tk.attempt}

	bucket, ok := w.buckets[p.Storage]
	if !ok {
		return w.badTask(ctx, tk, t.Payload(), fmt.Errorf("storage location %q is not served by this worker (it serves %s)", p.Storage, w.cfg.Storage.URL()))
	}
	tk.rec.Bucket = bucket.Name()

	// The key's earlier result, which the new one records as its previous, is read while
	// the task runs, not when its result is written.
	tk.prev = make(chan previous, 1)
	go func() {
		p, err := w.cfg.Results.Previous(ctx, tk.payload.Key, tk.payload.BatchID)
		tk.prev <- previous{p, err}
	}()

	err = w.verify(ctx, tk, bucket)
	return w.finish(ctx, tk, err)
}

// verify runs the steps of one attempt up to a record ready to write, or an error.
func (w *Worker) verify(ctx context.Context, tk *task, bucket *storage.Bucket) error {
	// A verdict paid for by an earlier attempt of this task is looked up while the
	// object is fetched: two round trips at once.
	earlier := make(chan *verdict, 1)
	go func() { earlier <- w.loadVerdict(ctx, tk.id) }()
	fetchStart := time.Now()
	r, err := bucket.Get(ctx, tk.payload.Key, &storage.GetOptions{MaxBytes: w.cfg.Precheck.MaxBytes})
	w.metrics.Fetch.Observe(time.Since(fetchStart).Seconds())
	switch {
	case errors.Is(err, storage.ErrNotFound):
		tk.rec.Status, tk.rec.Reason = results.StatusNotFound, "object does not exist"
		return nil
	case errors.Is(err, storage.ErrTooLarge):
		tk.rec.Status = results.StatusInvalidImage
		tk.rec.Reason = fmt.Sprintf("over the size cap of %d bytes", w.cfg.Precheck.MaxBytes)
		return nil
	case errors.Is(err, storage.ErrInvalidKey):
		tk.rec.Status, tk.rec.Reason = results.StatusBadTask, err.Error()
		return nil
	case err != nil:
		return &transient{err: fmt.Errorf("fetch selfie: %w", err), reason: "storage"}
	}
	defer r.Close()
	tk.rec.ETag = r.ETag
	tk.objectOK = true

	// The earlier verdict, if it is for this very object, is used again rather than
	// paid for twice.
	if v := <-earlier; v != nil && v.ETag == r.ETag {
		tk.verdict = v
		w.metrics.SavedCalls.Inc()
		tk.log.Info().Str("request_id", v.Result.RequestID).Msg("reusing the verdict of an earlier attempt")
		return nil
	}

	img, err := Precheck(r, r.Size, w.cfg.Precheck)
	if err != nil {
		var ie *InvalidImageError
		if errors.As(err, &ie) {
			tk.rec.Status, tk.rec.Reason = results.StatusInvalidImage, ie.Reason
			tk.rec.Image = &results.Image{Bytes: r.Size}
			return nil
		}
		return &transient{err: fmt.Errorf("read selfie: %w", err), reason: "storage"}
	}
	defer img.Release()
	tk.rec.Image = &results.Image{Format: img.Format, Width: img.Width, Height: img.Height, Bytes: img.Bytes}
	tk.rec.LowResolution = img.LowResolution

	res, err := w.call(ctx, tk, kairos.Selfie{
		Name:        path.Base(tk.payload.Key),
		ContentType: img.ContentType,
		Size:        img.Bytes,
		Body:        img.Body,
	})
	if err != nil || res == nil { // res is nil when call settled the record itself
		return err
	}
	tk.verdict = &verdict{ETag: r.ETag, Result: *res}
	tk.paid = true // kept in Redis by finish, alongside the result's storage write
	return nil
}

// call makes the paid API call under the global budget and classifies its error.
func (w *Worker) call(ctx context.Context, tk *task, s kairos.Selfie) (*kairos.Result, error) {
	waitStart := time.Now()
	lease, err := w.budget.Acquire(ctx)
	w.metrics.BudgetWait.Observe(time.Since(waitStart).Seconds())
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// Fail safe: no budget, no call. Not the selfie's fault.
		return nil, &notFailure{err: fmt.Errorf("acquire API budget: %w", err), delay: w.cfg.Retry.Base}
	}
	callCtx := ctx
	if lease.Logged() {
		callCtx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { lease.Sent(time.Now()) }})
	}
	res, err := w.cfg.Kairos.Verify(callCtx, s, tk.rec.Threshold)
	outcome := OutcomeOther
	switch {
	case err == nil:
		outcome = OutcomeOK
	case errors.Is(err, kairos.ErrUsageLimit):
		outcome = OutcomeUsageLimited
	}
	if rerr := lease.Release(context.WithoutCancel(ctx), outcome, WithRetryAfter(kairos.RetryAfter(err))); rerr != nil {
		tk.log.Warn().Err(rerr).Msg("release API budget lease")
	}
	w.observeCall(res, err)
	if err == nil {
		tk.log.Debug().Str("request_id", res.RequestID).Float64("score", res.Score).Msg("API answered")
		return res, nil
	}
	var ae *kairos.APIError
	requestID := ""
	if errors.As(err, &ae) {
		requestID = ae.RequestID
	}
	log := tk.log.With().Str("request_id", requestID).Logger()
	switch {
	case errors.Is(err, ErrInvalidImage):
		// A streamed image whose end turned out to be bad: the upload was aborted.
		var ie *InvalidImageError
		errors.As(err, &ie)
		tk.rec.Status, tk.rec.Reason = results.StatusInvalidImage, ie.Reason
		return nil, nil
	case errors.Is(err, kairos.ErrRejected):
		tk.rec.Status, tk.rec.Reason = results.StatusRejected, err.Error()
		tk.rec.Kairos = &results.Kairos{RequestID: requestID}
		return nil, nil
	case errors.Is(err, kairos.ErrUsageLimit):
		// admitted_at (Redis's clock) tells a call let through before the cooldown opened,
		// and answered 403 only because it arrived after, from one let through later.
		log.Warn().Str("admitted_at", lease.AdmittedAt().UTC().Format(time.RFC3339Nano)).
			Msg("API usage limit reached (403); the shared cooldown holds every worker")
		return nil, &notFailure{err: fmt.Errorf("%w: %w", ErrUsageLimited, err)}
	case errors.Is(err, kairos.ErrUnauthorized):
		w.pauseForCredentials(ctx, err, lease.AdmittedAt())
		return nil, &notFailure{err: fmt.Errorf("%w: %w", ErrServicePaused, err), delay: min(30*time.Second, w.cfg.Retry.Cap)}
	case kairos.IsRetryable(err):
		return nil, &transient{err: fmt.Errorf("verify: %w", err), reason: callReason(err), retryAfter: kairos.RetryAfter(err)}
	default:
		// An answer we cannot use and should not pay for again blindly: retry within the
		// task's attempts, then fail.
		return nil, &transient{err: fmt.Errorf("verify: %w", err), reason: "api_other"}
	}
}

func callReason(err error) string {
	switch {
	case errors.Is(err, kairos.ErrServer):
		return "api_5xx"
	case errors.Is(err, kairos.ErrRateLimited):
		return "api_429"
	case errors.Is(err, kairos.ErrBadResponse):
		return "api_bad_response"
	default:
		return "api_transport"
	}
}

// finish writes the record for a settled task, or hands a transient error to asynq
// (writing a failed result first when this was the last attempt).
func (w *Worker) finish(ctx context.Context, tk *task, err error) error {
	var tr *transient
	var nf *notFailure
	switch {
	case err == nil:
	case errors.As(err, &nf):
		w.metrics.Retries.WithLabelValues("not_counted").Inc()
		return err
	case errors.As(err, &tr) && !tk.last:
		tk.log.Warn().Err(err).Str("reason", tr.reason).Msg("attempt failed; will retry")
		w.metrics.Retries.WithLabelValues(tr.reason).Inc()
		return err
	case errors.As(err, &tr):
		tk.rec.Status = results.StatusFailed
		tk.rec.Reason = fmt.Sprintf("gave up after %d attempts: %v", tk.attempt, err)
	default: // context cancelled (shutdown): back to the queue without a result
		return err
	}
	if tk.verdict != nil {
		applyVerdict(&tk.rec, tk.verdict)
	}
	tk.rec.VerifiedAt = time.Now().UTC()
	opts := []results.WriteOption{w.verdictCommands(ctx, tk)}
	if tk.prev != nil {
		if pr := <-tk.prev; pr.err == nil && tk.rec.Key == tk.payload.Key {
			opts = append(opts, results.WithPrevious(pr.p))
		}
	}
	writeStart := time.Now()
	out, werr := w.cfg.Results.Write(ctx, &tk.rec, opts...)
	w.metrics.ResultWrite.Observe(time.Since(writeStart).Seconds())
	if errors.Is(werr, storage.ErrInvalidKey) {
		// No result can ever be stored under this key (e.g. too long with the results
		// prefix): retrying cannot help. The task is archived, visible to the operator.
		tk.log.Error().Err(werr).Msg("result cannot be stored under this key; task archived")
		return fmt.Errorf("%w: write result: %v", asynq.SkipRetry, werr)
	}
	if werr != nil {
		// The verdict, if any, is kept in Redis: the retry writes it without paying again.
		if tk.paid {
			w.saveVerdict(ctx, tk.id, tk.verdict)
		}
		tk.log.Warn().Err(werr).Msg("write result; will retry")
		w.metrics.Retries.WithLabelValues("results").Inc()
		return fmt.Errorf("write result: %w", werr)
	}
	if out.Redelivered {
		w.metrics.Redeliveries.Inc()
	}
	w.metrics.Results.WithLabelValues(string(tk.rec.Status)).Inc()
	w.metrics.TaskDuration.WithLabelValues(string(tk.rec.Status)).Observe(time.Since(tk.started).Seconds())
	ev := tk.log.Info()
	if tk.rec.Kairos != nil {
		ev = ev.Str("request_id", tk.rec.Kairos.RequestID)
	}
	if tk.rec.Score != nil {
		ev = ev.Float64("score", *tk.rec.Score)
	}
	ev.Str("status", string(tk.rec.Status)).Str("reason", tk.rec.Reason).Msg("result written")
	if tk.rec.Status == results.StatusFailed {
		w.metrics.Archived.Inc()
		return fmt.Errorf("%w: %v", asynq.SkipRetry, err)
	}
	return nil
}

// applyVerdict turns the API's answer into the record's score, status and identifiers.
func applyVerdict(rec *results.Record, v *verdict) {
	res := v.Result
	rec.Kairos = &results.Kairos{
		APIReqUID:    res.APIReqUID,
		RequestID:    res.RequestID,
		ResponseCode: res.ResponseCode,
		RequestedAt:  res.RequestedAt,
		ProcessedAt:  res.ProcessedAt,
	}
	rec.Faces = len(res.Faces)
	if rec.Faces == 0 {
		rec.Status, rec.Reason = results.StatusNoFace, "the API found no face"
		return
	}
	score := res.Score
	live := score >= rec.Threshold
	rec.Score, rec.Live = &score, &live
	rec.Status, rec.Reason = results.StatusNotLive, ""
	if live {
		rec.Status = results.StatusLive
	}
}

// badTask writes a bad_task result for a payload that cannot be read, then archives the
// task without retrying.
func (w *Worker) badTask(ctx context.Context, tk *task, raw []byte, cause error) error {
	var loose struct {
		Key     string `json:"key"`
		BatchID string `json:"batch_id"`
	}
	_ = json.Unmarshal(raw, &loose)
	tk.rec = results.Record{
		Key:      loose.Key,
		BatchID:  loose.BatchID,
		Status:   results.StatusBadTask,
		Reason:   cause.Error(),
		Attempts: tk.attempt,
	}
	if tk.rec.Key == "" || storage.ValidateKey(tk.rec.Key) != nil {
		tk.rec.Key = "_bad_tasks/" + tk.id
	}
	if results.ValidateBatchID(tk.rec.BatchID) != nil {
		tk.rec.BatchID = ""
	}
	tk.log.Error().Err(cause).Msg("unreadable task payload")
	if err := w.finish(ctx, tk, nil); err != nil {
		return err
	}
	return fmt.Errorf("%w: %v", asynq.SkipRetry, cause)
}

func (w *Worker) observeCall(res *kairos.Result, err error) {
	code := "error"
	var ae *kairos.APIError
	switch {
	case err == nil:
		code = "200"
		w.metrics.APILatency.Observe(res.Latency.Seconds())
	case errors.As(err, &ae):
		code = fmt.Sprint(ae.StatusCode)
	}
	w.metrics.APICalls.WithLabelValues(code).Inc()
}
