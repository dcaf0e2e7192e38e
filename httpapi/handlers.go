package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/results"
)

// DailyBatchPrefix starts the id of the day's batch of single verifications that name
// no batch: "api-" and the UTC date, e.g. "api-20261127".
const DailyBatchPrefix = "api-"

// DailyBatchID returns the id of the batch single verifications without a batch_id join
// on t's UTC day.
func DailyBatchID(t time.Time) string { return DailyBatchPrefix + t.UTC().Format("20060102") }

// clockSkew is how much earlier than the request a worker's clock may date the result
// a ?wait is waiting for.
const clockSkew = 2 * time.Second

// CheckKey returns nil for an object key the API accepts: one enqueue.ValidateKey
// accepts (non-empty, at most enqueue.MaxKeyLen bytes of UTF-8 without NUL) that does
// not start with "/" and has no "." or ".." segment (between slashes or backslashes),
// so that no key can step out of the storage root. Errors wrap ErrInvalidKey.
func CheckKey(key string) error {
	if err := enqueue.ValidateKey(key); err != nil {
		return err
	}
	if strings.HasPrefix(key, "/") || strings.HasPrefix(key, `\`) {
		return fmt.Errorf("%w: a key must not start with a slash", ErrInvalidKey)
	}
	for _, seg := range strings.FieldsFunc(key, func(r rune) bool { return r == '/' || r == '\\' }) {
		if seg == "." || seg == ".." {
			return fmt.Errorf("%w: a key must not have a %q segment", ErrInvalidKey, seg)
		}
	}
	return nil
}

// checkPrefix is CheckKey for a listing prefix, which may be empty (the whole storage).
func checkPrefix(p string) error {
	if p == "" {
		return nil
	}
	return CheckKey(p)
}

// threshold returns the threshold a request asks for, or the server's default.
func (s *Server) threshold(t *float64) (float64, *apiError) {
	if t == nil {
		return s.cfg.Threshold, nil
	}
	if err := enqueue.ValidateThreshold(*t); err != nil || *t <= 0 {
		return 0, newError(http.StatusBadRequest, CodeInvalidThreshold, fmt.Sprintf("threshold must be a number in (0, 1], got %v", *t))
	}
	return *t, nil
}

// batchID checks a batch id a request gives.
func batchID(id string) *apiError {
	if err := results.ValidateBatchID(id); err != nil {
		return newError(http.StatusBadRequest, CodeInvalidBatchID,
			"batch_id must be 1 to 128 ASCII letters, digits, '.', '_', '-' or ':'")
	}
	return nil
}

func keyError(err error) *apiError {
	return newError(http.StatusBadRequest, CodeInvalidKey, err.Error())
}

// mediaType returns r's content type without parameters, lowercase; "" when absent.
func mediaType(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return strings.ToLower(strings.TrimSpace(ct))
	}
	return mt
}

// readBody reads r's body, at most limit bytes: 413 beyond.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *apiError) {
	tooLarge := newError(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, fmt.Sprintf("the request body is larger than %d bytes", limit))
	if r.ContentLength > limit {
		return nil, tooLarge
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge
		}
		return nil, newError(http.StatusBadRequest, CodeInvalidRequest, "cannot read the request body")
	}
	return b, nil
}

// decodeJSON reads r's JSON body into v, strictly: one object, no unknown field.
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any) *apiError {
	if mt := mediaType(r); mt != "" && mt != "application/json" {
		return newError(http.StatusUnsupportedMediaType, CodeUnsupportedMedia, fmt.Sprintf("Content-Type %q: send application/json", mt))
	}
	b, aerr := readBody(w, r, s.cfg.MaxBodyBytes)
	if aerr != nil {
		return aerr
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return newError(http.StatusBadRequest, CodeInvalidRequest, "request body: "+err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return newError(http.StatusBadRequest, CodeInvalidRequest, "request body: one JSON object expected")
	}
	return nil
}

// internal logs err and answers 503: an unexpected error is Redis or storage failing.
func (s *Server) internal(w http.ResponseWriter, r *http.Request, what string, err error) {
	if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
		// The client went away; nobody reads the answer.
		writeError(w, newError(http.StatusServiceUnavailable, CodeUnavailable, "request cancelled"))
		return
	}
	s.cfg.Logger.Error().Err(err).Str("request_id", w.Header().Get("X-Request-ID")).Str("token", tokenName(r)).Msg(what)
	switch {
	case errors.Is(err, enqueue.ErrClosed), errors.Is(err, context.Canceled) && s.isStopping():
		writeRetryable(w, newError(http.StatusServiceUnavailable, CodeShuttingDown, "the server is shutting down; try again"), time.Second)
	default:
		writeRetryable(w, newError(http.StatusServiceUnavailable, CodeUnavailable, what+" failed; try again"), time.Second)
	}
}

func (s *Server) isStopping() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

// verificationRequest is the body of POST /v1/verifications.
type verificationRequest struct {
	Key       string   `json:"key"`
	Threshold *float64 `json:"threshold"`
	BatchID   string   `json:"batch_id"`
}

// verificationResponse answers POST /v1/verifications: 202 without Result, 200 with.
type verificationResponse struct {
	TaskID  string          `json:"task_id"`
	BatchID string          `json:"batch_id"`
	Key     string          `json:"key"`
	Result  *results.Record `json:"result,omitempty"`
}

// createVerification handles POST /v1/verifications.
func (s *Server) createVerification(w http.ResponseWriter, r *http.Request) {
	received := time.Now()
	wait, aerr := s.parseWait(r.URL.Query().Get("wait"))
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var req verificationRequest
	if aerr := s.decodeJSON(w, r, &req); aerr != nil {
		writeError(w, aerr)
		return
	}
	if err := CheckKey(req.Key); err != nil {
		writeError(w, keyError(err))
		return
	}
	thr, aerr := s.threshold(req.Threshold)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	batch := req.BatchID
	if batch == "" {
		batch = DailyBatchID(received)
	} else if aerr := batchID(batch); aerr != nil {
		writeError(w, aerr)
		return
	}
	taskID, batch, err := s.cfg.Enqueue.EnqueueOne(r.Context(), s.storageURL, req.Key, thr, batch)
	switch {
	case errors.Is(err, enqueue.ErrBadKey):
		writeError(w, keyError(err))
		return
	case errors.Is(err, enqueue.ErrBadThreshold):
		writeError(w, newError(http.StatusBadRequest, CodeInvalidThreshold, err.Error()))
		return
	case errors.Is(err, enqueue.ErrBadBatch):
		writeError(w, newError(http.StatusBadRequest, CodeInvalidBatchID, err.Error()))
		return
	case err != nil:
		s.internal(w, r, "enqueue", err)
		return
	}
	resp := verificationResponse{TaskID: taskID, BatchID: batch, Key: req.Key}
	w.Header().Set("Location", "/v1/results/"+escapeKey(req.Key))
	if wait > 0 {
		if rec := s.waitResult(r.Context(), req.Key, batch, taskID, received, wait); rec != nil {
			resp.Result = rec
			writeJSON(w, http.StatusOK, resp)
			return
		}
	}
	writeJSON(w, http.StatusAccepted, resp)
}

// parseWait reads ?wait: a Go duration ("10s", "1m") or a number of seconds, cut to
// MaxWait.
func (s *Server) parseWait(v string) (time.Duration, *apiError) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		secs, ferr := strconv.ParseFloat(v, 64)
		if ferr != nil || secs != secs {
			return 0, newError(http.StatusBadRequest, CodeInvalidRequest, fmt.Sprintf("wait %q: give a duration such as 10s", v))
		}
		d = time.Duration(min(secs, 1e6) * float64(time.Second))
	}
	if d < 0 {
		return 0, newError(http.StatusBadRequest, CodeInvalidRequest, fmt.Sprintf("wait %q is negative", v))
	}
	return min(d, s.cfg.MaxWait), nil
}

// waitResult polls for the result of the task of key in batch until wait has passed,
// the request ends or the server stops. It accepts the key's latest result when it
// belongs to batch and was produced after the request arrived. When the task had
// already finished before (the key was verified in this batch earlier, and the enqueue
// found its task), it answers with the batch's own result for the key at once.
func (s *Server) waitResult(ctx context.Context, key, batch, taskID string, received time.Time, wait time.Duration) *results.Record {
	if info, err := s.inspector.GetTaskInfo(s.cfg.Queue, taskID); err == nil &&
		(info.State == asynq.TaskStateCompleted || info.State == asynq.TaskStateArchived) {
		if b, err := s.cfg.Redis.HGet(ctx, results.BatchResultsKey(batch), key).Bytes(); err == nil {
			if rec, err := results.UnmarshalRecord(b); err == nil {
				return rec
			}
		}
	}
	since := received.Add(-clockSkew)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(s.cfg.WaitPoll)
	defer tick.Stop()
	for {
		// EXISTS first: Store.Get falls back to storage when Redis has no result, which a
		// key verified for the first time would make us do on every poll.
		if n, err := s.cfg.Redis.Exists(ctx, results.ResultKey(key)).Result(); err == nil && n > 0 {
			rec, err := s.cfg.Results.Get(ctx, key)
			if err == nil && rec.BatchID == batch && !rec.VerifiedAt.Before(since) {
				return rec
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return nil
		case <-deadline.C:
			return nil
		case <-tick.C:
		}
	}
}

// escapeKey escapes a key for a URL path, keeping its slashes.
func escapeKey(key string) string {
	parts := strings.Split(key, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// batchRequest is the JSON body of POST /v1/batches.
type batchRequest struct {
	Keys        []string `json:"keys"`
	Prefix      *string  `json:"prefix"`
	Threshold   *float64 `json:"threshold"`
	CallbackURL string   `json:"callback_url"`
	BatchID     string   `json:"batch_id"`
}

// batchResponse answers POST /v1/batches.
type batchResponse struct {
	BatchID string `json:"batch_id"`
	// Enqueued and Duplicates are known when the keys were given in the request; a prefix
	// is listed in the background.
	Enqueued    *int64 `json:"enqueued,omitempty"`
	Duplicates  *int64 `json:"duplicates,omitempty"`
	EnqueueDone bool   `json:"enqueue_done"`
}

// batchPlan is a validated batch request.
type batchPlan struct {
	id, source, callback string
	threshold            float64
	items                []enqueue.Item // keys given in the request
	prefix               *string        // or a prefix to list
}

// createBatch handles POST /v1/batches.
func (s *Server) createBatch(w http.ResponseWriter, r *http.Request) {
	var (
		plan *batchPlan
		aerr *apiError
	)
	switch mt := mediaType(r); mt {
	case "application/x-ndjson", "application/jsonl", "application/x-jsonlines":
		plan, aerr = s.planJSONL(w, r)
	default:
		plan, aerr = s.planJSON(w, r)
	}
	if aerr == nil {
		aerr = s.checkCallback(r.Context(), plan.callback)
	}
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if plan.id == "" {
		plan.id = results.NewBatchID()
	}
	b := enqueue.Batch{ID: plan.id, Storage: s.storageURL, Source: plan.source, Threshold: plan.threshold, CallbackURL: plan.callback}

	if plan.prefix != nil {
		prefix := *plan.prefix
		// The listing outlives the request: reserve its place before creating the batch, so
		// that a stopping server refuses it cleanly.
		ready := make(chan struct{})
		var abandon bool
		ok := s.startJob(func(ctx context.Context) {
			<-ready
			if abandon {
				return
			}
			s.listPrefix(ctx, b, prefix)
		})
		if !ok {
			writeRetryable(w, newError(http.StatusServiceUnavailable, CodeShuttingDown, "the server is shutting down; try again"), time.Second)
			return
		}
		err := s.recordBatch(r.Context(), b)
		abandon = err != nil
		close(ready)
		if err != nil {
			s.internal(w, r, "create batch", err)
			return
		}
		writeJSON(w, http.StatusAccepted, batchResponse{BatchID: b.ID})
		return
	}

	// The keys are all here: queue them even if the client goes away, so the batch is
	// not left half queued; only a stopping server (Shutdown's deadline) cuts it short.
	items := plan.items
	src := func(yield func(enqueue.Item, error) bool) {
		for _, it := range items {
			if !yield(it, nil) {
				return
			}
		}
	}
	var (
		sum                   enqueue.Summary
		createErr, enqueueErr error
	)
	ok := s.runJob(func(ctx context.Context) {
		if createErr = s.recordBatch(r.Context(), b); createErr == nil {
			sum, enqueueErr = s.cfg.Enqueue.Enqueue(ctx, b, src, nil)
		}
	})
	switch {
	case !ok:
		writeRetryable(w, newError(http.StatusServiceUnavailable, CodeShuttingDown, "the server is shutting down; try again"), time.Second)
		return
	case createErr != nil:
		s.internal(w, r, "create batch", createErr)
		return
	case enqueueErr != nil:
		s.cfg.Logger.Error().Err(enqueueErr).Str("batch_id", b.ID).Msg("enqueue keys")
		writeRetryable(w, newError(http.StatusServiceUnavailable, CodeUnavailable,
			fmt.Sprintf("batch %s was only partly queued (%d of %d keys); post the same request with batch_id %q to resume", b.ID, sum.Enqueued+sum.Duplicates, len(items), b.ID)), time.Second)
		return
	}
	writeJSON(w, http.StatusAccepted, batchResponse{BatchID: b.ID, Enqueued: &sum.Enqueued, Duplicates: &sum.Duplicates, EnqueueDone: sum.Finished})
}

// recordBatch creates the batch record (unless it exists: then it is resumed) and, when
// it has a callback, marks the callback pending.
func (s *Server) recordBatch(ctx context.Context, b enqueue.Batch) error {
	if _, err := s.cfg.Results.CreateBatch(ctx, results.BatchInfo{
		ID: b.ID, Source: b.Source, Storage: b.Storage, Threshold: b.Threshold,
		CreatedAt: time.Now().UTC(), CallbackURL: b.CallbackURL,
	}); err != nil {
		return err
	}
	if b.CallbackURL != "" {
		return MarkCallbackPending(ctx, s.cfg.Redis, s.cfg.Results, b.ID)
	}
	return nil
}

// listPrefix queues every key under prefix into batch b, in the background.
func (s *Server) listPrefix(ctx context.Context, b enqueue.Batch, prefix string) {
	log := s.cfg.Logger.With().Str("batch_id", b.ID).Str("prefix", prefix).Logger()
	sum, err := s.cfg.Enqueue.Enqueue(ctx, b, enqueue.Prefix(ctx, s.cfg.Storage, prefix, s.cfg.SkipPrefixes...), nil)
	if err == nil {
		log.Info().Int64("enqueued", sum.Enqueued).Int64("duplicates", sum.Duplicates).Msg("prefix queued")
		return
	}
	msg := "listing stopped: " + err.Error()
	if ctx.Err() != nil {
		msg = "listing interrupted by a server shutdown"
	}
	msg += fmt.Sprintf("; post the same prefix with batch_id %q to resume", b.ID)
	log.Error().Err(err).Int64("enqueued", sum.Enqueued).Msg("prefix listing stopped")
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.cfg.Results.SetBatchField(fctx, b.ID, fieldEnqueueError, truncate(msg, 500)); err != nil {
		log.Error().Err(err).Msg("record the listing's error")
	}
}

// planJSON reads a JSON batch request.
func (s *Server) planJSON(w http.ResponseWriter, r *http.Request) (*batchPlan, *apiError) {
	var req batchRequest
	if aerr := s.decodeJSON(w, r, &req); aerr != nil {
		return nil, aerr
	}
	plan, aerr := s.planCommon(req.Threshold, req.CallbackURL, req.BatchID)
	if aerr != nil {
		return nil, aerr
	}
	switch {
	case req.Keys != nil && req.Prefix != nil:
		return nil, newError(http.StatusBadRequest, CodeInvalidRequest, "give either keys or prefix, not both")
	case req.Prefix != nil:
		if err := checkPrefix(*req.Prefix); err != nil {
			return nil, newError(http.StatusBadRequest, CodeInvalidKey, "prefix: "+err.Error())
		}
		plan.prefix = req.Prefix
		plan.source = fmt.Sprintf("api %s: prefix %q", tokenName(r), *req.Prefix)
	case len(req.Keys) > 0:
		plan.items = make([]enqueue.Item, len(req.Keys))
		for i, k := range req.Keys {
			if err := CheckKey(k); err != nil {
				return nil, newError(http.StatusBadRequest, CodeInvalidKey, fmt.Sprintf("keys[%d]: %v", i, err))
			}
			plan.items[i] = enqueue.Item{Key: k, Line: i + 1}
		}
		plan.source = fmt.Sprintf("api %s: %d keys", tokenName(r), len(req.Keys))
	default:
		return nil, newError(http.StatusBadRequest, CodeInvalidRequest, "give a non-empty keys list or a prefix")
	}
	return plan, nil
}

// planJSONL reads a JSONL batch request: one {"key": ..., "threshold": ...} a line, the
// batch's threshold, callback_url and batch_id in the query.
func (s *Server) planJSONL(w http.ResponseWriter, r *http.Request) (*batchPlan, *apiError) {
	q := r.URL.Query()
	var thr *float64
	if v := q.Get("threshold"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, newError(http.StatusBadRequest, CodeInvalidThreshold, fmt.Sprintf("threshold %q is not a number", v))
		}
		thr = &f
	}
	plan, aerr := s.planCommon(thr, q.Get("callback_url"), q.Get("batch_id"))
	if aerr != nil {
		return nil, aerr
	}
	body, aerr := readBody(w, r, s.cfg.MaxKeysBodyBytes)
	if aerr != nil {
		return nil, aerr
	}
	for it, err := range enqueue.Manifest(bytes.NewReader(body), enqueue.ManifestJSONL) {
		if err != nil {
			return nil, newError(http.StatusBadRequest, CodeInvalidRequest, "JSONL body: "+err.Error())
		}
		if err := CheckKey(it.Key); err != nil {
			return nil, newError(http.StatusBadRequest, CodeInvalidKey, fmt.Sprintf("line %d: %v", it.Line, err))
		}
		if it.Threshold != nil && *it.Threshold <= 0 {
			return nil, newError(http.StatusBadRequest, CodeInvalidThreshold, fmt.Sprintf("line %d: threshold must be a number in (0, 1]", it.Line))
		}
		plan.items = append(plan.items, it)
	}
	if len(plan.items) == 0 {
		return nil, newError(http.StatusBadRequest, CodeInvalidRequest, "the JSONL body holds no keys")
	}
	plan.source = fmt.Sprintf("api %s: %d keys (jsonl)", tokenName(r), len(plan.items))
	return plan, nil
}

// planCommon checks the fields every batch request shares.
func (s *Server) planCommon(thr *float64, callback, id string) (*batchPlan, *apiError) {
	t, aerr := s.threshold(thr)
	if aerr != nil {
		return nil, aerr
	}
	if id != "" {
		if aerr := batchID(id); aerr != nil {
			return nil, aerr
		}
	}
	return &batchPlan{id: id, threshold: t, callback: callback}, nil
}

// checkCallback checks a callback URL, if any.
func (s *Server) checkCallback(ctx context.Context, u string) *apiError {
	if u == "" {
		return nil
	}
	if len(s.cfg.WebhookSecret) == 0 {
		return newError(http.StatusBadRequest, CodeCallbacksDisabled, "callbacks are disabled: the server has no webhook secret (LIVENESSQ_WEBHOOK_SECRET)")
	}
	if err := CheckCallbackURL(ctx, u, s.cfg.AllowPrivateCallbacks, s.cfg.Resolver); err != nil {
		return newError(http.StatusBadRequest, CodeInvalidCallbackURL, "callback_url: "+err.Error())
	}
	return nil
}

// getBatch handles GET /v1/batches/{id}.
func (s *Server) getBatch(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if aerr := batchID(id); aerr != nil {
		writeError(w, aerr)
		return
	}
	sum, err := s.cfg.Results.Batch(r.Context(), id)
	switch {
	case errors.Is(err, results.ErrBatchNotFound):
		writeError(w, newError(http.StatusNotFound, CodeNotFound, fmt.Sprintf("no batch %q (never created, or expired)", id)))
	case err != nil:
		s.internal(w, r, "read batch", err)
	default:
		writeJSON(w, http.StatusOK, NewBatchView(sum))
	}
}

// getBatchResults handles GET /v1/batches/{id}/results: every result of the batch,
// streamed as JSONL (or CSV with ?format=csv).
func (s *Server) getBatchResults(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if aerr := batchID(id); aerr != nil {
		writeError(w, aerr)
		return
	}
	format := results.FormatJSONL
	if v := r.URL.Query().Get("format"); v != "" {
		f, err := results.ParseFormat(v)
		if err != nil {
			writeError(w, newError(http.StatusBadRequest, CodeInvalidRequest, "format must be jsonl or csv"))
			return
		}
		format = f
	}
	ct := "application/x-ndjson"
	if format == results.FormatCSV {
		ct = "text/csv; charset=utf-8"
	}
	sw := &startWriter{w: w, contentType: ct}
	n, err := s.cfg.Results.Export(r.Context(), id, format, sw)
	switch {
	case err == nil:
		sw.start()
		s.cfg.Logger.Debug().Str("batch_id", id).Int("results", n).Msg("results exported")
	case sw.started:
		// Too late for an error answer: cut the stream so the client sees it incomplete.
		s.cfg.Logger.Warn().Err(err).Str("batch_id", id).Int("results", n).Msg("export stopped")
		panic(http.ErrAbortHandler)
	case errors.Is(err, results.ErrBatchNotFound):
		writeError(w, newError(http.StatusNotFound, CodeNotFound, fmt.Sprintf("no batch %q (never created, or expired)", id)))
	default:
		s.internal(w, r, "export batch", err)
	}
}

// startWriter writes the headers of a streamed answer with its first byte.
type startWriter struct {
	w           http.ResponseWriter
	contentType string
	started     bool
}

func (s *startWriter) start() {
	if s.started {
		return
	}
	s.started = true
	s.w.Header().Set("Content-Type", s.contentType)
	s.w.Header().Set("X-Content-Type-Options", "nosniff")
	s.w.WriteHeader(http.StatusOK)
}

func (s *startWriter) Write(p []byte) (int, error) {
	s.start()
	return s.w.Write(p)
}

// getResult handles GET /v1/results/{key...}.
func (s *Server) getResult(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if err := CheckKey(key); err != nil {
		writeError(w, keyError(err))
		return
	}
	rec, err := s.cfg.Results.Get(r.Context(), key)
	switch {
	case errors.Is(err, results.ErrNotFound):
		writeError(w, newError(http.StatusNotFound, CodeNotFound, fmt.Sprintf("no result for key %q", key)))
	case err != nil:
		s.internal(w, r, "read result", err)
	default:
		writeJSON(w, http.StatusOK, rec)
	}
}

// getHealth handles GET /healthz: 200 when Redis answers.
func (s *Server) getHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.cfg.Redis.Ping(ctx).Err(); err != nil {
		writeError(w, newError(http.StatusServiceUnavailable, CodeUnavailable, "Redis does not answer"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
