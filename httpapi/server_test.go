package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/httpapi"
	"github.com/livenessq/livenessq/internal/testenv"
	"github.com/livenessq/livenessq/kairos"
	"github.com/livenessq/livenessq/kairos/kairostest"
	"github.com/livenessq/livenessq/results"
	"github.com/livenessq/livenessq/storage"
	"github.com/livenessq/livenessq/worker"
)

const (
	tokenCI      = "ci-token-0123456789abcdef"
	tokenOther   = "other-token-fedcba9876543210"
	webhookKey   = "webhook-secret-never-logged-5a7c"
	kairosAppID  = "test-app"
	kairosAppKey = "kairos-app-key-never-logged-91b2"
)

func score(v float64) *float64 { return &v }

// options vary setup.
type options struct {
	server     func(*httpapi.Config)
	dispatcher func(*httpapi.DispatcherConfig)
	// dispatchers is the number of Dispatchers run (default 1; -1 for none).
	dispatchers int
	noWorker    bool
	// localDir, when set, is the storage instead of a bucket on the S3 server.
	localDir string
}

type testBundle struct {
	rdb    *redis.Client
	bucket *storage.Bucket
	store  *results.Store
	server *httpapi.Server
	base   string
	client *http.Client
	logs   *testenv.Buffer
}

// setup runs, on real Redis (DB testenv.DBServe) and the real S3 server, the API on a
// loopback port, a worker calling the emulator over HTTP, and Dispatchers.
func setup(t *testing.T, o options) *testBundle {
	t.Helper()
	ctx := context.Background()
	rdb := testenv.Redis(t, testenv.DBServe)
	var bucket *storage.Bucket
	var err error
	if o.localDir != "" {
		bucket, err = storage.NewLocal(storage.LocalConfig{Root: o.localDir})
	} else {
		s3 := testenv.S3Server(t)
		bucket, err = storage.NewS3(ctx, storage.S3Config{Bucket: testenv.BucketName(t), Endpoint: s3.Endpoint,
			Region: s3.Region, PathStyle: true, AccessKey: s3.AccessKey, SecretKey: s3.SecretKey, CreateBucket: true})
	}
	require.NoError(t, err)
	t.Cleanup(func() { bucket.Close() })
	logs := &testenv.Buffer{}
	log := zerolog.New(logs)
	store, err := results.New(results.Config{Redis: rdb, Bucket: bucket.Sub("results/"), Logger: log})
	require.NoError(t, err)

	if !o.noWorker {
		emu := kairostest.New(kairostest.Config{AppID: kairosAppID, AppKey: kairosAppKey, Rules: []kairostest.Rule{
			{Pattern: "live-*", Score: score(0.93)},
			{Pattern: "spoof-*", Score: score(0.12)},
		}})
		emuSrv := httptest.NewServer(emu)
		t.Cleanup(emuSrv.Close)
		kc, err := kairos.New(kairos.Config{BaseURL: emuSrv.URL + "/v0.2/liveness-verification", AppID: kairosAppID, AppKey: kairosAppKey})
		require.NoError(t, err)
		w, err := worker.New(worker.Config{
			Redis: rdb, Storage: bucket, Results: store, Kairos: kc, Concurrency: 8,
			PollInterval: 20 * time.Millisecond,
			Retry:        worker.RetryPolicy{Base: 10 * time.Millisecond, Cap: 100 * time.Millisecond, MaxAttempts: 10},
			Logger:       log,
		})
		require.NoError(t, err)
		require.NoError(t, w.Start(ctx))
		t.Cleanup(func() { w.Shutdown(context.Background()) })
	}

	eq, err := enqueue.New(enqueue.Config{Redis: rdb, Batches: store, Logger: log})
	require.NoError(t, err)
	t.Cleanup(func() { eq.Close() })
	tokens, err := httpapi.ParseTokens("ci:" + tokenCI + ",other:" + tokenOther)
	require.NoError(t, err)
	cfg := httpapi.Config{
		Enqueue: eq, Results: store, Redis: rdb, Storage: bucket, SkipPrefixes: []string{"results/"},
		Tokens: tokens, RateLimit: 1000, WaitPoll: 20 * time.Millisecond,
		WebhookSecret: []byte(webhookKey), AllowPrivateCallbacks: true,
		Addr: "127.0.0.1:0", Logger: log,
	}
	if o.server != nil {
		o.server(&cfg)
	}
	srv, err := httpapi.New(cfg)
	require.NoError(t, err)
	require.NoError(t, srv.Start(ctx))
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, srv.Shutdown(sctx))
	})

	client := &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	b := &testBundle{rdb: rdb, bucket: bucket, store: store, server: srv, base: "http://" + srv.Addr(), client: client, logs: logs}
	n := o.dispatchers
	if n == 0 {
		n = 1
	}
	for range max(n, 0) {
		b.startDispatcher(t, o.dispatcher)
	}
	return b
}

// startDispatcher runs a Dispatcher until the test ends.
func (b *testBundle) startDispatcher(t *testing.T, mutate func(*httpapi.DispatcherConfig)) {
	t.Helper()
	cfg := httpapi.DispatcherConfig{
		Redis: b.rdb, Results: b.store, Secret: []byte(webhookKey), AllowPrivate: true,
		Timeout: 2 * time.Second, Interval: 20 * time.Millisecond, MaxAttempts: 5,
		Backoff: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond, DiscoverInterval: 50 * time.Millisecond,
		Logger: zerolog.New(b.logs),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	d, err := httpapi.NewDispatcher(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = d.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
}
func (b *testBundle) put(t *testing.T, key string, data []byte) {
	t.Helper()
	require.NoError(t, b.bucket.Put(context.Background(), key, bytes.NewReader(data), &storage.PutOptions{Size: int64(len(data))}))
}

// response is an answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(r.body, v), "body: %s", r.body)
}

// errorCode returns the code of an error answer, checking its shape.
func (r response) errorCode(t *testing.T) string {
	t.Helper()
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	r.json(t, &e)
	require.NotEmpty(t, e.Error.Code, "no error code in %s", r.body)
	require.NotEmpty(t, e.Error.Message, "no error message in %s", r.body)
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	return e.Error.Code
}

// do sends a request with token (none when empty) and reads the answer.
func (b *testBundle) do(t *testing.T, method, path, token, contentType string, body []byte) response {
	t.Helper()
	req, err := http.NewRequest(method, b.base+path, bytes.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := b.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// postJSON posts v as JSON with the ci token.
func (b *testBundle) postJSON(t *testing.T, path string, v any) response {
	t.Helper()
	body, err := json.Marshal(v)
	require.NoError(t, err)
	return b.do(t, "POST", path, tokenCI, "application/json", body)
}

func (b *testBundle) get(t *testing.T, path string) response {
	t.Helper()
	return b.do(t, "GET", path, tokenCI, "", nil)
}

// batch reads a batch's summary over the API.
func (b *testBundle) batch(t *testing.T, id string) httpapi.BatchView {
	t.Helper()
	r := b.get(t, "/v1/batches/"+id)
	require.Equal(t, http.StatusOK, r.status, "body: %s", r.body)
	var v httpapi.BatchView
	r.json(t, &v)
	return v
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// verificationAnswer is the body of POST /v1/verifications.
type verificationAnswer struct {
	TaskID  string          `json:"task_id"`
	BatchID string          `json:"batch_id"`
	Key     string          `json:"key"`
	Result  *results.Record `json:"result"`
}

func TestVerifyWaitReturnsResult(t *testing.T) {
	b := setup(t, options{})
	b.put(t, "sync/live-1.jpg", kairostest.JPEG(640, 640, 1))

	r := b.postJSON(t, "/v1/verifications?wait=20s", map[string]any{"key": "sync/live-1.jpg"})
	require.Equal(t, http.StatusOK, r.status, "body: %s", r.body)
	var first verificationAnswer
	r.json(t, &first)
	require.Equal(t, httpapi.DailyBatchID(time.Now()), first.BatchID)
	require.Equal(t, enqueue.TaskID(first.BatchID, b.bucket.URL(), "sync/live-1.jpg"), first.TaskID)
	require.NotNil(t, first.Result)
	require.Equal(t, results.StatusLive, first.Result.Status)
	require.Equal(t, "sync/live-1.jpg", first.Result.Key)
	require.Equal(t, 0.6, first.Result.Threshold)
	require.Equal(t, "/v1/results/sync/live-1.jpg", r.header.Get("Location"))

	// The latest result of the key is the same record.
	r = b.get(t, "/v1/results/sync/live-1.jpg")
	require.Equal(t, http.StatusOK, r.status, "body: %s", r.body)
	var rec results.Record
	r.json(t, &rec)
	require.Equal(t, first.Result.VerifiedAt, rec.VerifiedAt)

	// The same key again on the same day without a batch: same task, not verified again,
	// and ?wait answers with that task's result at once.
	r = b.postJSON(t, "/v1/verifications?wait=20s", map[string]any{"key": "sync/live-1.jpg"})
	require.Equal(t, http.StatusOK, r.status, "body: %s", r.body)
	var again verificationAnswer
	r.json(t, &again)
	require.Equal(t, first.TaskID, again.TaskID)
	require.Equal(t, first.Result.VerifiedAt, again.Result.VerifiedAt)

	// A batch of its own verifies it anew, with its own threshold.
	r = b.postJSON(t, "/v1/verifications?wait=20s", map[string]any{"key": "sync/live-1.jpg", "batch_id": "recheck-1", "threshold": 0.95})
	require.Equal(t, http.StatusOK, r.status, "body: %s", r.body)
	var fresh verificationAnswer
	r.json(t, &fresh)
	require.Equal(t, "recheck-1", fresh.BatchID)
	require.Equal(t, results.StatusNotLive, fresh.Result.Status)
	require.Equal(t, 0.95, fresh.Result.Threshold)
	require.NotNil(t, fresh.Result.Previous)
	require.Equal(t, results.StatusLive, fresh.Result.Previous.Status)

	// Without ?wait the answer is always 202.
	b.put(t, "sync/spoof-1.jpg", kairostest.JPEG(640, 640, 2))
	r = b.postJSON(t, "/v1/verifications", map[string]any{"key": "sync/spoof-1.jpg"})
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	var accepted verificationAnswer
	r.json(t, &accepted)
	require.Nil(t, accepted.Result)
	require.NotEmpty(t, accepted.TaskID)
	waitFor(t, 20*time.Second, "result of sync/spoof-1.jpg", func() bool {
		return b.get(t, "/v1/results/sync/spoof-1.jpg").status == http.StatusOK
	})
}

// receiver is a webhook receiver on loopback that fails its first failFirst calls.
type receiver struct {
	srv       *httptest.Server
	failFirst int
	delay     time.Duration // before answering: a slow receiver

	mu    sync.Mutex
	calls []receivedCall
}

type receivedCall struct {
	header http.Header
	body   []byte
	status int
}

func newReceiver(t *testing.T, failFirst int, delay time.Duration) *receiver {
	t.Helper()
	rc := &receiver{failFirst: failFirst, delay: delay}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		time.Sleep(rc.delay)
		rc.mu.Lock()
		status := http.StatusNoContent
		if len(rc.calls) < rc.failFirst {
			status = http.StatusInternalServerError
		}
		rc.calls = append(rc.calls, receivedCall{header: r.Header.Clone(), body: body, status: status})
		rc.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) received() []receivedCall {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]receivedCall(nil), rc.calls...)
}

// successes returns the calls answered 2xx.
func (rc *receiver) successes() []receivedCall {
	var out []receivedCall
	for _, c := range rc.received() {
		if c.status < 300 {
			out = append(out, c)
		}
	}
	return out
}

// checkCall checks a callback's signature and headers and returns its payload.
func checkCall(t *testing.T, c receivedCall, batch string) httpapi.WebhookPayload {
	t.Helper()
	require.True(t, httpapi.VerifySignature([]byte(webhookKey), c.body, c.header.Get(httpapi.SignatureHeader)),
		"bad signature %q", c.header.Get(httpapi.SignatureHeader))
	require.Equal(t, httpapi.EventBatchCompleted, c.header.Get(httpapi.EventHeader))
	require.Equal(t, batch, c.header.Get(httpapi.BatchHeader))
	require.Equal(t, "application/json", c.header.Get("Content-Type"))
	var p httpapi.WebhookPayload
	require.NoError(t, json.Unmarshal(c.body, &p))
	require.Equal(t, httpapi.EventBatchCompleted, p.Event)
	require.Equal(t, batch, p.Batch.BatchID)
	require.True(t, p.Batch.Complete)
	require.Nil(t, p.Batch.Callback)
	return p
}

// waitDelivered waits for the batch's callback to reach state, then lets the
// Dispatchers scan a few more times and returns the summary.
func (b *testBundle) waitCallback(t *testing.T, id, state string) httpapi.BatchView {
	t.Helper()
	var v httpapi.BatchView
	waitFor(t, 30*time.Second, "callback of "+id+" "+state, func() bool {
		v = b.batch(t, id)
		return v.Callback != nil && v.Callback.State == state
	})
	// Out of the pending set once it is settled: no Dispatcher looks at it again.
	waitFor(t, 10*time.Second, id+" leaves the pending set", func() bool {
		ok, err := b.rdb.SIsMember(context.Background(), httpapi.PendingCallbacksKey, id).Result()
		require.NoError(t, err)
		return !ok
	})
	time.Sleep(150 * time.Millisecond) // several more scans: nothing more may be sent
	return b.batch(t, id)
}

func TestBatchFromKeysCallsBackOnce(t *testing.T) {
	b := setup(t, options{dispatchers: 3})        // three Dispatchers compete for the delivery
	rc := newReceiver(t, 0, 200*time.Millisecond) // the others scan several times while one delivers
	var keys []string
	for i := range 6 {
		k := fmt.Sprintf("keys/live-%d.jpg", i)
		b.put(t, k, kairostest.JPEG(400, 400, int64(i)))
		keys = append(keys, k)
	}
	b.put(t, "keys/spoof-1.jpg", kairostest.JPEG(400, 400, 9))
	keys = append(keys, "keys/spoof-1.jpg", "keys/missing.jpg", "keys/live-0.jpg") // one listed twice

	r := b.postJSON(t, "/v1/batches", map[string]any{"keys": keys, "callback_url": rc.srv.URL + "/hook?tenant=7"})
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	var created struct {
		BatchID     string `json:"batch_id"`
		Enqueued    int64  `json:"enqueued"`
		Duplicates  int64  `json:"duplicates"`
		EnqueueDone bool   `json:"enqueue_done"`
	}
	r.json(t, &created)
	require.NotEmpty(t, created.BatchID)
	require.Equal(t, int64(8), created.Enqueued)
	require.Equal(t, int64(1), created.Duplicates)
	require.True(t, created.EnqueueDone)

	v := b.waitCallback(t, created.BatchID, httpapi.CallbackDelivered)
	require.Equal(t, int64(1), v.Callback.Attempts)
	require.Equal(t, http.StatusNoContent, v.Callback.LastStatus)
	require.Empty(t, v.Callback.LastError)
	require.False(t, v.Callback.DeliveredAt.IsZero())
	require.Equal(t, rc.srv.URL+"/hook?tenant=7", v.Callback.URL)

	calls := rc.received()
	require.Len(t, calls, 1, "the callback must be delivered exactly once")
	p := checkCall(t, calls[0], created.BatchID)
	require.Equal(t, map[string]int64{"live": 6, "not_live": 1, "not_found": 1}, p.Batch.Counts)
	require.Equal(t, int64(8), p.Batch.Done)
	require.Equal(t, 1.0, p.Batch.Progress)
	require.Equal(t, "1", calls[0].header.Get(httpapi.AttemptHeader))

	// The results stream back as JSONL, one record per key.
	r = b.get(t, "/v1/batches/"+created.BatchID+"/results")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "application/x-ndjson", r.header.Get("Content-Type"))
	lines := strings.Split(strings.TrimSpace(string(r.body)), "\n")
	require.Len(t, lines, 8)
	seen := map[string]bool{}
	for _, l := range lines {
		rec, err := results.UnmarshalRecord([]byte(l))
		require.NoError(t, err)
		require.Equal(t, created.BatchID, rec.BatchID)
		seen[rec.Key] = true
	}
	require.Len(t, seen, 8)
	r = b.get(t, "/v1/batches/"+created.BatchID+"/results?format=csv")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, 9, strings.Count(string(r.body), "\n")) // header + 8 rows
}

func TestBatchFromPrefixCallsBack(t *testing.T) {
	b := setup(t, options{})
	rc := newReceiver(t, 0, 0)
	for i := range 12 {
		b.put(t, fmt.Sprintf("pfx/a/live-%02d.jpg", i), kairostest.JPEG(320, 320, int64(i)))
	}
	b.put(t, "pfx/b/spoof-1.png", kairostest.PNG(320, 320, 1))
	b.put(t, "other/live-x.jpg", kairostest.JPEG(320, 320, 99)) // outside the prefix

	r := b.postJSON(t, "/v1/batches", map[string]any{"prefix": "pfx/", "threshold": 0.5, "callback_url": rc.srv.URL})
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	var created struct {
		BatchID     string `json:"batch_id"`
		EnqueueDone bool   `json:"enqueue_done"`
	}
	r.json(t, &created)

	v := b.waitCallback(t, created.BatchID, httpapi.CallbackDelivered)
	require.Equal(t, int64(13), v.Enqueued)
	require.Equal(t, map[string]int64{"live": 12, "not_live": 1}, v.Counts)
	require.Equal(t, 0.5, v.Threshold)
	require.Contains(t, v.Source, `api ci: prefix "pfx/"`)
	calls := rc.received()
	require.Len(t, calls, 1)
	p := checkCall(t, calls[0], created.BatchID)
	require.Equal(t, int64(13), p.Batch.Done)
	var hist int64
	for _, n := range p.Batch.Histogram {
		hist += n
	}
	require.Equal(t, int64(13), hist)
}

func TestBatchFromJSONL(t *testing.T) {
	b := setup(t, options{})
	b.put(t, "jl/live-1.jpg", kairostest.JPEG(320, 320, 1))
	b.put(t, "jl/live-2.jpg", kairostest.JPEG(320, 320, 2))
	body := "{\"key\":\"jl/live-1.jpg\"}\n\n{\"key\":\"jl/live-2.jpg\",\"threshold\":0.99}\n"
	r := b.do(t, "POST", "/v1/batches?batch_id=jsonl-1&threshold=0.7", tokenCI, "application/x-ndjson", []byte(body))
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	var v httpapi.BatchView
	waitFor(t, 20*time.Second, "batch jsonl-1 complete", func() bool {
		v = b.batch(t, "jsonl-1")
		return v.Complete
	})
	require.Equal(t, map[string]int64{"live": 1, "not_live": 1}, v.Counts)
	require.Equal(t, 0.7, v.Threshold)
	require.Nil(t, v.Callback)

	// A bad line refuses the whole body: nothing of it is queued.
	body = "{\"key\":\"jl/live-1.jpg\"}\n{\"key\":\"../x.jpg\"}\n"
	r = b.do(t, "POST", "/v1/batches?batch_id=jsonl-2", tokenCI, "application/x-ndjson", []byte(body))
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Equal(t, httpapi.CodeInvalidKey, r.errorCode(t))
	require.Contains(t, string(r.body), "line 2")
	require.Equal(t, http.StatusNotFound, b.get(t, "/v1/batches/jsonl-2").status)
}

func TestCallbackRetriedUntilDelivered(t *testing.T) {
	b := setup(t, options{})
	rc := newReceiver(t, 2, 0)
	b.put(t, "retry/live-1.jpg", kairostest.JPEG(320, 320, 1))
	r := b.postJSON(t, "/v1/batches", map[string]any{"keys": []string{"retry/live-1.jpg"}, "callback_url": rc.srv.URL, "batch_id": "retry-1"})
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)

	v := b.waitCallback(t, "retry-1", httpapi.CallbackDelivered)
	require.Equal(t, int64(3), v.Callback.Attempts)
	require.Equal(t, http.StatusNoContent, v.Callback.LastStatus)
	calls := rc.received()
	require.Len(t, calls, 3)
	for i, c := range calls {
		checkCall(t, c, "retry-1")
		require.Equal(t, fmt.Sprint(i+1), c.header.Get(httpapi.AttemptHeader))
	}
	require.Len(t, rc.successes(), 1)
}

func TestCallbackFailsAfterMaxAttempts(t *testing.T) {
	b := setup(t, options{dispatcher: func(c *httpapi.DispatcherConfig) { c.MaxAttempts = 3 }})
	rc := newReceiver(t, 1000, 0)
	b.put(t, "fail/live-1.jpg", kairostest.JPEG(320, 320, 1))
	r := b.postJSON(t, "/v1/batches", map[string]any{"keys": []string{"fail/live-1.jpg"}, "callback_url": rc.srv.URL, "batch_id": "fail-1"})
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)

	v := b.waitCallback(t, "fail-1", httpapi.CallbackFailed)
	require.Equal(t, int64(3), v.Callback.Attempts)
	require.Equal(t, http.StatusInternalServerError, v.Callback.LastStatus)
	require.Contains(t, v.Callback.LastError, "500")
	require.Len(t, rc.received(), 3)
}

// TestCallbackAddressCheckedAtDelivery: a URL accepted when the batch was created
// (private addresses allowed there) is still refused by a Dispatcher that does not
// allow them, as it connects; the receiver is never reached.
func TestCallbackAddressCheckedAtDelivery(t *testing.T) {
	b := setup(t, options{dispatcher: func(c *httpapi.DispatcherConfig) { c.AllowPrivate = false }})
	rc := newReceiver(t, 0, 0)
	b.put(t, "guard/live-1.jpg", kairostest.JPEG(320, 320, 1))
	r := b.postJSON(t, "/v1/batches", map[string]any{"keys": []string{"guard/live-1.jpg"}, "callback_url": rc.srv.URL, "batch_id": "guard-1"})
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)

	v := b.waitCallback(t, "guard-1", httpapi.CallbackFailed)
	require.Equal(t, int64(1), v.Callback.Attempts, "a refused address is not retried")
	require.Contains(t, v.Callback.LastError, "callback address not allowed")
	require.Contains(t, v.Callback.LastError, "127.0.0.1")
	require.Empty(t, rc.received())
}

func TestCallbackURLRefusedByDefault(t *testing.T) {
	b := setup(t, options{server: func(c *httpapi.Config) { c.AllowPrivateCallbacks = false }, dispatchers: -1, noWorker: true})
	rc := newReceiver(t, 0, 0)
	tests := []struct {
		desc string
		url  string
		code string
	}{
		{desc: "loopback receiver", url: rc.srv.URL, code: httpapi.CodeInvalidCallbackURL},
		{desc: "localhost", url: "http://localhost:9/hook", code: httpapi.CodeInvalidCallbackURL},
		{desc: "private", url: "http://10.1.2.3/hook", code: httpapi.CodeInvalidCallbackURL},
		{desc: "link-local metadata", url: "http://169.254.169.254/latest", code: httpapi.CodeInvalidCallbackURL},
		{desc: "IPv6 loopback", url: "http://[::1]:9/", code: httpapi.CodeInvalidCallbackURL},
		{desc: "ftp", url: "ftp://93.184.216.34/x", code: httpapi.CodeInvalidCallbackURL},
		{desc: "file", url: "file:///etc/passwd", code: httpapi.CodeInvalidCallbackURL},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			r := b.postJSON(t, "/v1/batches", map[string]any{"keys": []string{"a.jpg"}, "callback_url": tt.url, "batch_id": "cb-refused"})
			require.Equal(t, http.StatusBadRequest, r.status, "body: %s", r.body)
			require.Equal(t, tt.code, r.errorCode(t))
		})
	}
	require.Equal(t, http.StatusNotFound, b.get(t, "/v1/batches/cb-refused").status, "a refused request created a batch")
	// A public address passes the check (nothing is delivered: no Dispatcher runs).
	r := b.postJSON(t, "/v1/batches", map[string]any{"keys": []string{"a.jpg"}, "callback_url": "https://93.184.216.34/hook", "batch_id": "cb-ok"})
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	v := b.batch(t, "cb-ok")
	require.Equal(t, httpapi.CallbackPending, v.Callback.State)
	ok, err := b.rdb.SIsMember(context.Background(), httpapi.PendingCallbacksKey, "cb-ok").Result()
	require.NoError(t, err)
	require.True(t, ok)
}

func TestErrorAnswers(t *testing.T) {
	b := setup(t, options{noWorker: true, dispatchers: -1, server: func(c *httpapi.Config) {
		c.MaxBodyBytes = 2048
		c.MaxKeysBodyBytes = 4096
	}})
	big := `{"keys":["` + strings.Repeat("k", 3000) + `"]}`
	bigJSONL := strings.Repeat("{\"key\":\"0123456789012345678901234567890123456789\"}\n", 100)
	tests := []struct {
		desc        string
		method      string
		path        string
		token       string
		contentType string
		body        string
		status      int
		code        string
	}{
		{desc: "no token", method: "POST", path: "/v1/verifications", body: `{"key":"a.jpg"}`, status: 401, code: httpapi.CodeUnauthorized},
		{desc: "wrong token", method: "GET", path: "/v1/results/a.jpg", token: "not-a-valid-token-000000", status: 401, code: httpapi.CodeUnauthorized},
		{desc: "a token's name as token", method: "GET", path: "/v1/batches/x", token: "ci", status: 401, code: httpapi.CodeUnauthorized},
		{desc: "malformed JSON", method: "POST", path: "/v1/verifications", token: tokenCI, body: `{"key":`, status: 400, code: httpapi.CodeInvalidRequest},
		{desc: "unknown field", method: "POST", path: "/v1/verifications", token: tokenCI, body: `{"key":"a.jpg","treshold":0.7}`, status: 400, code: httpapi.CodeInvalidRequest},
		{desc: "two objects", method: "POST", path: "/v1/verifications", token: tokenCI, body: `{"key":"a.jpg"}{"key":"b.jpg"}`, status: 400, code: httpapi.CodeInvalidRequest},
		{desc: "empty key", method: "POST", path: "/v1/verifications", token: tokenCI, body: `{"key":""}`, status: 400, code: httpapi.CodeInvalidKey},
		{desc: "no key", method: "POST", path: "/v1/verifications", token: tokenCI, body: `{}`, status: 400, code: httpapi.CodeInvalidKey},
		{desc: "path escape", method: "POST", path: "/v1/verifications", token: tokenCI, body: `{"key":"a/../../etc/passwd"}`, status: 400, code: httpapi.CodeInvalidKey},
		{desc: "key too long", method: "POST", path: "/v1/verifications", token: tokenCI, body: `{"key":"` + strings.Repeat("k", 1025) + `"}`, status: 400, code: httpapi.CodeInvalidKey},
		{desc: "threshold above 1", method: "POST", path: "/v1/verifications", token: tokenCI, body: `{"key":"a.jpg","threshold":2}`, status: 400, code: httpapi.CodeInvalidThreshold},
		{desc: "threshold 0", method: "POST", path: "/v1/verifications", token: tokenCI, body: `{"key":"a.jpg","threshold":0}`, status: 400, code: httpapi.CodeInvalidThreshold},
		{desc: "bad batch id", method: "POST", path: "/v1/verifications", token: tokenCI, body: `{"key":"a.jpg","batch_id":"{x}"}`, status: 400, code: httpapi.CodeInvalidBatchID},
		{desc: "bad wait", method: "POST", path: "/v1/verifications?wait=soon", token: tokenCI, body: `{"key":"a.jpg"}`, status: 400, code: httpapi.CodeInvalidRequest},
		{desc: "form body", method: "POST", path: "/v1/verifications", token: tokenCI, contentType: "application/x-www-form-urlencoded", body: `key=a.jpg`, status: 415, code: httpapi.CodeUnsupportedMedia},
		{desc: "JSON body too large", method: "POST", path: "/v1/batches", token: tokenCI, body: big, status: 413, code: httpapi.CodeBodyTooLarge},
		{desc: "JSONL body too large", method: "POST", path: "/v1/batches", token: tokenCI, contentType: "application/x-ndjson", body: bigJSONL, status: 413, code: httpapi.CodeBodyTooLarge},
		{desc: "keys and prefix", method: "POST", path: "/v1/batches", token: tokenCI, body: `{"keys":["a.jpg"],"prefix":"p/"}`, status: 400, code: httpapi.CodeInvalidRequest},
		{desc: "no keys", method: "POST", path: "/v1/batches", token: tokenCI, body: `{"keys":[]}`, status: 400, code: httpapi.CodeInvalidRequest},
		{desc: "a bad key among keys", method: "POST", path: "/v1/batches", token: tokenCI, body: `{"keys":["a.jpg","./b.jpg"]}`, status: 400, code: httpapi.CodeInvalidKey},
		{desc: "prefix escape", method: "POST", path: "/v1/batches", token: tokenCI, body: `{"prefix":"../"}`, status: 400, code: httpapi.CodeInvalidKey},
		{desc: "bad JSONL line", method: "POST", path: "/v1/batches", token: tokenCI, contentType: "application/x-ndjson", body: "{\"key\":\"a.jpg\"}\nnot json\n", status: 400, code: httpapi.CodeInvalidRequest},
		{desc: "no such batch", method: "GET", path: "/v1/batches/nope", token: tokenCI, status: 404, code: httpapi.CodeNotFound},
		{desc: "no such batch's results", method: "GET", path: "/v1/batches/nope/results", token: tokenCI, status: 404, code: httpapi.CodeNotFound},
		{desc: "bad export format", method: "GET", path: "/v1/batches/nope/results?format=xml", token: tokenCI, status: 400, code: httpapi.CodeInvalidRequest},
		{desc: "no such result", method: "GET", path: "/v1/results/never/seen.jpg", token: tokenCI, status: 404, code: httpapi.CodeNotFound},
		{desc: "encoded path escape", method: "GET", path: "/v1/results/%2E%2E/results/x", token: tokenCI, status: 400, code: httpapi.CodeInvalidKey},
		{desc: "no such route", method: "GET", path: "/v2/things", token: tokenCI, status: 404, code: httpapi.CodeNotFound},
		{desc: "wrong method", method: "DELETE", path: "/v1/batches/x", token: tokenCI, status: 405, code: httpapi.CodeMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			ct := tt.contentType
			if ct == "" && tt.body != "" {
				ct = "application/json"
			}
			r := b.do(t, tt.method, tt.path, tt.token, ct, []byte(tt.body))
			require.Equal(t, tt.status, r.status, "body: %s", r.body)
			require.Equal(t, tt.code, r.errorCode(t))
			switch tt.status {
			case 401:
				require.True(t, strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer"), "WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
			case 405:
				require.Equal(t, "GET, HEAD", r.header.Get("Allow"))
			}
			require.NotEmpty(t, r.header.Get("X-Request-ID"))
		})
	}
	// Nothing was queued by the refused requests.
	n, err := b.rdb.ZCard(context.Background(), results.BatchIndexKey).Result()
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestCallbacksDisabledWithoutSecret(t *testing.T) {
	b := setup(t, options{noWorker: true, dispatchers: -1, server: func(c *httpapi.Config) { c.WebhookSecret = nil }})
	r := b.postJSON(t, "/v1/batches", map[string]any{"keys": []string{"a.jpg"}, "callback_url": "https://93.184.216.34/hook"})
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Equal(t, httpapi.CodeCallbacksDisabled, r.errorCode(t))
}

func TestRateLimitPerToken(t *testing.T) {
	b := setup(t, options{noWorker: true, dispatchers: -1, server: func(c *httpapi.Config) {
		c.RateLimit, c.RateBurst = 1, 3
	}})
	var statuses []int
	var limited response
	for range 6 {
		r := b.get(t, "/v1/results/none.jpg")
		statuses = append(statuses, r.status)
		if r.status == http.StatusTooManyRequests {
			limited = r
		}
	}
	require.Equal(t, []int{404, 404, 404}, statuses[:3], "the burst is served")
	require.Contains(t, statuses[3:], http.StatusTooManyRequests)
	require.Equal(t, httpapi.CodeRateLimited, limited.errorCode(t))
	require.NotEmpty(t, limited.header.Get("Retry-After"))
	require.GreaterOrEqual(t, limited.header.Get("Retry-After"), "1")

	// The limit is per token: the other token still has its burst.
	r := b.do(t, "GET", "/v1/results/none.jpg", tokenOther, "", nil)
	require.Equal(t, http.StatusNotFound, r.status)
	// And it lives in Redis under livenessq:{api}:rate:<name>.
	n, err := b.rdb.Exists(context.Background(), httpapi.RateKey("ci"), httpapi.RateKey("other")).Result()
	require.NoError(t, err)
	require.Equal(t, int64(2), n)
	keys, err := b.rdb.Keys(context.Background(), "rate:*").Result()
	require.NoError(t, err)
	require.Empty(t, keys)
}

// TestRoutesServeTheirDocument: every operation of openapi.json is answered by its
// handler (never by the unknown-route or wrong-method answers), and the document is
// served without a token.
func TestRoutesServeTheirDocument(t *testing.T) {
	b := setup(t, options{noWorker: true, dispatchers: -1})
	r := b.do(t, "GET", "/v1/openapi.json", "", "", nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, httpapi.OpenAPI(), r.body)
	require.Equal(t, http.StatusOK, b.do(t, "GET", "/healthz", "", "", nil).status)

	ops, _ := openAPIOperations(t)
	for _, op := range ops {
		method, path, _ := strings.Cut(op, " ")
		path = strings.NewReplacer("{id}", "some-batch", "{key}", "some/key.jpg").Replace(path)
		r := b.do(t, method, path, tokenCI, "application/json", []byte(`{}`))
		if r.status >= 400 {
			code := r.errorCode(t)
			require.NotEqual(t, httpapi.CodeMethodNotAllowed, code, op)
			require.NotContains(t, string(r.body), "no such route", op)
		}
	}
}

// TestShutdownEndsWaits: a request waiting for a result answers 202 as soon as the
// server shuts down, rather than holding the shutdown for its whole wait.
func TestShutdownEndsWaits(t *testing.T) {
	b := setup(t, options{noWorker: true, dispatchers: -1})
	done := make(chan response, 1)
	go func() {
		req, _ := http.NewRequest("POST", b.base+"/v1/verifications?wait=60s", strings.NewReader(`{"key":"never.jpg"}`))
		req.Header.Set("Authorization", "Bearer "+tokenCI)
		resp, err := b.client.Do(req)
		if err != nil {
			done <- response{}
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		done <- response{status: resp.StatusCode, body: body}
	}()
	// Wait for the task to be queued: the request is then waiting.
	waitFor(t, 10*time.Second, "task queued", func() bool {
		n, err := b.rdb.ZCard(context.Background(), results.BatchIndexKey).Result()
		require.NoError(t, err)
		return n == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, b.server.Shutdown(ctx))
	r := <-done
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	require.NoError(t, b.server.Shutdown(ctx), "a second Shutdown is safe")
	require.Error(t, b.server.Start(ctx), "no Start after Shutdown")
}

// TestSecretsNeverLogged: tokens, the webhook secret and the API key appear in no log
// line, while token names do.
func TestSecretsNeverLogged(t *testing.T) {
	b := setup(t, options{})
	rc := newReceiver(t, 1, 0)
	b.put(t, "log/live-1.jpg", kairostest.JPEG(320, 320, 1))
	r := b.postJSON(t, "/v1/verifications?wait=20s", map[string]any{"key": "log/live-1.jpg"})
	require.Equal(t, http.StatusOK, r.status, "body: %s", r.body)
	r = b.postJSON(t, "/v1/batches", map[string]any{"keys": []string{"log/live-1.jpg"}, "callback_url": rc.srv.URL, "batch_id": "log-1"})
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	b.waitCallback(t, "log-1", httpapi.CallbackDelivered)
	require.Equal(t, http.StatusUnauthorized, b.do(t, "GET", "/v1/batches/log-1", tokenOther+"x", "", nil).status)
	require.Equal(t, http.StatusOK, b.do(t, "GET", "/v1/batches/log-1", tokenOther, "", nil).status)

	logs := b.logs.String()
	for _, secret := range []string{tokenCI, tokenOther, webhookKey, kairosAppKey} {
		require.NotContains(t, logs, secret)
	}
	require.Contains(t, logs, `"token":"ci"`)
	require.Contains(t, logs, `"token":"other"`)
	require.Contains(t, logs, `"callback attempt"`)
}

// TestExpiredLeaseTakenOver: a delivery claimed by a Dispatcher that died is left alone
// while its lease runs, and taken over by another once it has expired.
func TestExpiredLeaseTakenOver(t *testing.T) {
	b := setup(t, options{dispatchers: -1})
	ctx := context.Background()
	rc := newReceiver(t, 0, 0)
	b.put(t, "lease/live-1.jpg", kairostest.JPEG(320, 320, 1))
	r := b.postJSON(t, "/v1/batches", map[string]any{"keys": []string{"lease/live-1.jpg"}, "callback_url": rc.srv.URL, "batch_id": "lease-1"})
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	waitFor(t, 20*time.Second, "batch complete", func() bool { return b.batch(t, "lease-1").Complete })

	// A dead Dispatcher's claim, with its lease still running.
	meta := results.BatchMetaKey("lease-1")
	lease := time.Now().Add(time.Hour).UnixMilli()
	require.NoError(t, b.rdb.HSet(ctx, meta, results.FieldCallbackState, httpapi.CallbackDelivering,
		results.FieldCallbackAttempts, 1, "callback_owner", "dead:1", "callback_lease_until", lease).Err())
	b.startDispatcher(t, nil)
	time.Sleep(200 * time.Millisecond) // about ten scans
	require.Empty(t, rc.received(), "a running lease was not respected")
	require.Equal(t, httpapi.CallbackDelivering, b.batch(t, "lease-1").Callback.State)

	// The lease runs out: the delivery is taken over and counted as attempt 2.
	require.NoError(t, b.rdb.HSet(ctx, meta, "callback_lease_until", time.Now().Add(-time.Second).UnixMilli()).Err())
	v := b.waitCallback(t, "lease-1", httpapi.CallbackDelivered)
	require.Equal(t, int64(2), v.Callback.Attempts)
	calls := rc.received()
	require.Len(t, calls, 1)
	checkCall(t, calls[0], "lease-1")
	require.Equal(t, "2", calls[0].header.Get(httpapi.AttemptHeader))
}

// TestShutdownStopsPrefixListing: a Shutdown whose deadline has passed cancels a
// background prefix listing cleanly: Shutdown returns, no goroutine is left (TestMain),
// and the batch says how to resume unless the listing had already finished.
func TestShutdownStopsPrefixListing(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "many"), 0o755))
	const n = 1000
	for i := range n {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "many", fmt.Sprintf("k-%05d.jpg", i)), nil, 0o644))
	}
	b := setup(t, options{noWorker: true, dispatchers: -1, localDir: dir})
	r := b.postJSON(t, "/v1/batches", map[string]any{"prefix": "many/", "batch_id": "many-1"})
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no grace at all: the listing is cancelled
	err := b.server.Shutdown(ctx)
	sum, berr := b.store.Batch(context.Background(), "many-1")
	require.NoError(t, berr)
	v := httpapi.NewBatchView(sum)
	if v.EnqueueDone {
		t.Logf("the listing finished before the shutdown (%d keys)", v.Enqueued)
		require.Equal(t, int64(n), v.Enqueued)
		return
	}
	require.ErrorIs(t, err, context.Canceled)
	require.Contains(t, v.EnqueueError, "interrupted by a server shutdown")
	require.Contains(t, v.EnqueueError, `batch_id "many-1"`)
	require.Less(t, v.Enqueued, int64(n))

	// After a shutdown, new listings are refused rather than started.
	req := httptest.NewRequest("POST", "/v1/batches", strings.NewReader(`{"prefix":"many/"}`))
	req.Header.Set("Authorization", "Bearer "+tokenCI)
	rec := httptest.NewRecorder()
	b.server.Handler().ServeHTTP(rec, req)
	require.Equal(t, http.StatusServiceUnavailable, rec.Code, rec.Body.String())
	require.Contains(t, rec.Body.String(), httpapi.CodeShuttingDown)
}

// TestCallbackOfBatchMadeOutsideTheAPI: a batch created with a CallbackURL by another
// producer (the enqueue package, as `livenessq enqueue --callback-url` does), which
// never called MarkCallbackPending, is found and called back too.
func TestCallbackOfBatchMadeOutsideTheAPI(t *testing.T) {
	b := setup(t, options{})
	rc := newReceiver(t, 0, 0)
	b.put(t, "cli/live-1.jpg", kairostest.JPEG(320, 320, 1))
	eq, err := enqueue.New(enqueue.Config{Redis: b.rdb, Batches: b.store})
	require.NoError(t, err)
	defer eq.Close()
	sum, err := eq.Enqueue(context.Background(), enqueue.Batch{ID: "cli-1", Storage: b.bucket.URL(), Source: "test", CallbackURL: rc.srv.URL},
		enqueue.Keys("cli/live-1.jpg"), nil)
	require.NoError(t, err)
	require.True(t, sum.Finished)

	v := b.waitCallback(t, "cli-1", httpapi.CallbackDelivered)
	require.Equal(t, int64(1), v.Callback.Attempts)
	calls := rc.received()
	require.Len(t, calls, 1)
	checkCall(t, calls[0], "cli-1")
}
