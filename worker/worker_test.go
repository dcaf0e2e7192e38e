package worker_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/internal/testenv"
	"github.com/livenessq/livenessq/kairos"
	"github.com/livenessq/livenessq/kairos/kairostest"
	"github.com/livenessq/livenessq/results"
	"github.com/livenessq/livenessq/storage"
	"github.com/livenessq/livenessq/worker"
)

const (
	testAppID  = "test-app"
	testAppKey = "s3cr3t-app-key-never-printed"
)

type testBundle struct {
	rdb      *redis.Client
	bucket   *storage.Bucket
	store    *results.Store
	emu      *kairostest.Emulator
	client   *asynq.Client
	worker   *worker.Worker
	logs     *testenv.Buffer
	apiURL   string
	inspect  *asynq.Inspector
	storeURL string
}

func score(v float64) *float64 { return &v }

// setup starts the emulator over real HTTP and a worker on real Redis and the real S3
// server; beforeStart run on the worker between New and Start.
func setup(t *testing.T, emuCfg kairostest.Config, mutate func(*worker.Config), beforeStart ...func(*worker.Worker)) *testBundle {
	t.Helper()
	ctx := context.Background()
	rdb := testenv.Redis(t, testenv.DBWorker)
	s3 := testenv.S3Server(t)
	bucket, err := storage.NewS3(ctx, storage.S3Config{Bucket: testenv.BucketName(t), Endpoint: s3.Endpoint,
		Region: s3.Region, PathStyle: true, AccessKey: s3.AccessKey, SecretKey: s3.SecretKey, CreateBucket: true})
	require.NoError(t, err)
	t.Cleanup(func() { bucket.Close() })
	logs := &testenv.Buffer{}
	log := zerolog.New(logs)
	store, err := results.New(results.Config{Redis: rdb, Bucket: bucket.Sub("results/"), Logger: log})
	require.NoError(t, err)

	emuCfg.AppID, emuCfg.AppKey = testAppID, testAppKey
	emu := kairostest.New(emuCfg)
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	kc, err := kairos.New(kairos.Config{BaseURL: srv.URL + "/v0.2/liveness-verification", AppID: testAppID, AppKey: testAppKey})
	require.NoError(t, err)

	cfg := worker.Config{
		Redis:        rdb,
		Storage:      bucket,
		Results:      store,
		Kairos:       kc,
		Concurrency:  16,
		PollInterval: 20 * time.Millisecond,
		Retry:        worker.RetryPolicy{Base: 10 * time.Millisecond, Cap: 100 * time.Millisecond, MaxAttempts: 10},
		Logger:       log,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	w, err := worker.New(cfg)
	require.NoError(t, err)
	for _, f := range beforeStart {
		f(w)
	}
	require.NoError(t, w.Start(ctx))
	t.Cleanup(func() { w.Shutdown(context.Background()) })

	client := asynq.NewClientFromRedisClient(rdb)
	t.Cleanup(func() { client.Close() })
	insp := asynq.NewInspectorFromRedisClient(rdb)
	return &testBundle{rdb: rdb, bucket: bucket, store: store, emu: emu, client: client, worker: w, logs: logs,
		apiURL: srv.URL, inspect: insp, storeURL: bucket.URL()}
}

func (b *testBundle) put(t *testing.T, key string, data []byte) {
	t.Helper()
	require.NoError(t, b.bucket.Put(context.Background(), key, bytes.NewReader(data), &storage.PutOptions{Size: int64(len(data))}))
}

// enqueue queues keys in batch id and records the batch as fully enqueued.
func (b *testBundle) enqueue(t *testing.T, batch string, keys []string) {
	t.Helper()
	ctx := context.Background()
	_, err := b.store.CreateBatch(ctx, results.BatchInfo{ID: batch, Source: "test", Storage: b.storeURL, Threshold: 0.6, CreatedAt: time.Now()})
	require.NoError(t, err)
	var n int64
	for _, k := range keys {
		task, err := enqueue.NewVerifyTask(enqueue.Payload{V: 1, Storage: b.storeURL, Key: k, BatchID: batch, EnqueuedAt: time.Now()})
		require.NoError(t, err)
		_, err = b.client.Enqueue(task, asynq.Queue(enqueue.DefaultQueue), asynq.MaxRetry(9),
			asynq.TaskID(enqueue.TaskID(batch, b.storeURL, k)))
		require.NoError(t, err)
		n++
	}
	require.NoError(t, b.store.AddEnqueued(ctx, batch, n, 0, 0))
	_, err = b.store.FinishEnqueue(ctx, batch)
	require.NoError(t, err)
}

// enqueueRefused makes the emulator refuse the worker's (correct) key, then queues n
// selfies in batch.
func (b *testBundle) enqueueRefused(t *testing.T, batch string, n int) {
	t.Helper()
	wrong := "another-key"
	require.NoError(t, b.emu.SetFaults(kairostest.Faults{AppKey: &wrong}))
	var keys []string
	for i := range n {
		k := fmt.Sprintf("%s-%02d.jpg", batch, i)
		b.put(t, k, kairostest.JPEG(400, 400, int64(i)))
		keys = append(keys, k)
	}
	b.enqueue(t, batch, keys)
}

// waitComplete polls the batch summary until it is complete.
func (b *testBundle) waitComplete(t *testing.T, batch string, timeout time.Duration) *results.BatchSummary {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s, err := b.store.Batch(context.Background(), batch)
		require.NoError(t, err)
		if s.Complete {
			return s
		}
		if time.Now().After(deadline) {
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			if qi, err := b.inspect.GetQueueInfo(enqueue.DefaultQueue); err == nil {
				t.Logf("queue: %+v", *qi)
			}
			lines := strings.Split(b.logs.String(), "\n")
			t.Fatalf("batch %s not complete after %v: done %d of %d, counts %v; last log lines:\n%s", batch, timeout,
				s.Done, s.Enqueued, s.Counts, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPipelineEndToEnd(t *testing.T) {
	b := setup(t, kairostest.Config{
		ErrorRate: 0.2, // injected 503s, retried to success
		Rules: []kairostest.Rule{
			{Pattern: "live-*", Score: score(0.93)},
			{Pattern: "spoof-*", Score: score(0.12)},
			{Pattern: "noface-*", NoFace: true},
			{Pattern: "reject-*", Status: 422},
		},
	}, nil)
	ctx := context.Background()

	want := map[string]results.Status{}
	var keys []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	add := func(key string, data []byte, status results.Status) {
		mu.Lock()
		keys = append(keys, key)
		want[key] = status
		mu.Unlock()
		if data == nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.put(t, key, data)
		}()
	}
	for i := range 160 {
		add(fmt.Sprintf("live-%03d.jpg", i), kairostest.JPEG(320+i%7, 400, int64(i)), results.StatusLive)
		add(fmt.Sprintf("spoof-%03d.jpg", i), kairostest.JPEG(400, 320+i%5, int64(i)), results.StatusNotLive)
	}
	for i := range 60 {
		add(fmt.Sprintf("noface-%02d.png", i), kairostest.PNG(300, 300, int64(i)), results.StatusNoFace)
		add(fmt.Sprintf("dir/sub dir/ünï-%02d.jpg", i), kairostest.JPEG(960, 960, int64(1000+i)), "") // hash-scored
	}
	for i := range 20 {
		add(fmt.Sprintf("reject-%02d.jpg", i), kairostest.JPEG(300, 300, int64(i)), results.StatusRejected)
		add(fmt.Sprintf("missing-%02d.jpg", i), nil, results.StatusNotFound)
		add(fmt.Sprintf("narrow-%02d.jpg", i), kairostest.JPEG(299, 600, int64(i)), results.StatusInvalidImage)
	}
	tall := kairostest.PNG(400, 5001, 1)
	for i := range 5 {
		add(fmt.Sprintf("tall-%d.png", i), tall, results.StatusInvalidImage)
	}
	jpg := kairostest.JPEG(500, 500, 7)
	add("corrupt.jpg", jpg[:len(jpg)/3], results.StatusInvalidImage)
	add("text.jpg", []byte("this is a text file named like a JPEG\n"), results.StatusInvalidImage)
	wg.Wait()
	require.GreaterOrEqual(t, len(keys), 500)

	const batch = "e2e-1"
	b.enqueue(t, batch, keys)
	// An unreadable payload that still names its batch, counted there as bad_task.
	_, err := b.client.Enqueue(asynq.NewTask(enqueue.TaskType, []byte(`{"v":1,"key":"bad-payload.jpg","batch_id":"e2e-1","threshold":"high"}`)),
		asynq.Queue(enqueue.DefaultQueue))
	require.NoError(t, err)
	want["bad-payload.jpg"] = results.StatusBadTask
	require.NoError(t, b.store.AddEnqueued(ctx, batch, 1, 0, 0))

	sum := b.waitComplete(t, batch, 2*time.Minute)

	// Every key ends with exactly one result of the right status.
	gotCounts := map[results.Status]int64{}
	scoredByHash := 0
	for key, st := range want {
		rec, err := b.store.Get(ctx, key)
		require.NoError(t, err, key)
		if st == "" {
			require.Contains(t, []results.Status{results.StatusLive, results.StatusNotLive}, rec.Status, key)
			scoredByHash++
		} else {
			require.Equal(t, st, rec.Status, "key %q: reason %q", key, rec.Reason)
		}
		require.Equal(t, batch, rec.BatchID)
		gotCounts[rec.Status]++
		if rec.Status.Scored() {
			require.NotNil(t, rec.Kairos)
			require.NotEmpty(t, rec.Kairos.RequestID)
			require.Equal(t, *rec.Score >= rec.Threshold, *rec.Live)
		}
		if rec.Status == results.StatusInvalidImage {
			require.NotEmpty(t, rec.Reason)
			require.Nil(t, rec.Kairos, "no call for an invalid image")
		}
		// The JSON in storage agrees with Redis.
		r, err := b.bucket.Get(ctx, "results/"+key+".json", nil)
		require.NoError(t, err, key)
		body, _ := io.ReadAll(r)
		r.Close()
		require.Contains(t, string(body), `"status":"`+string(rec.Status)+`"`)
	}
	if diff := cmp.Diff(gotCounts, sum.Counts); diff != "" {
		t.Errorf("batch counts disagree with the records (-records +counts):\n%s", diff)
	}
	require.Equal(t, int64(len(want)), sum.Done)
	require.Equal(t, int64(60), sum.Counts[results.StatusNoFace])
	require.Equal(t, int64(20), sum.Counts[results.StatusNotFound])

	// No API call for anything that failed the pre-check; every call the emulator took is
	// a scored, no-face or rejected image, plus the 503s that were retried.
	st := b.emu.Stats()
	paid := sum.Counts[results.StatusLive] + sum.Counts[results.StatusNotLive] + sum.Counts[results.StatusNoFace]
	require.Equal(t, paid, st.Count(200), "one 200 per scored or no-face result, no more")
	require.Equal(t, int64(20), st.Count(422), "one call per rejected image")
	require.Equal(t, int64(0), st.Count(400)+st.Count(415), "invalid images never reach the API")
	require.Greater(t, st.Count(503), int64(0), "the test injects 503s")
	require.Equal(t, st.Total, st.Count(200)+st.Count(422)+st.Count(503))
	t.Logf("batch of %d: %v; API answers %v", len(want), sum.Counts, st.ByStatus)

	// Nothing archived but the bad payload; no secret in the logs.
	qi, err := b.inspect.GetQueueInfo(enqueue.DefaultQueue)
	require.NoError(t, err)
	require.Equal(t, 1, qi.Archived, "only the unreadable payload is archived")
	require.NotContains(t, b.logs.String(), testAppKey)
	require.NotContains(t, b.logs.String(), testenv.S3Server(t).SecretKey)

	// A second run of the same keys, with the live ones now scoring low, records flips.
	require.NoError(t, b.emu.Update(func(c *kairostest.Config) {
		c.ErrorRate = 0
		c.Rules[0].Score = score(0.2)
	}))
	b.enqueue(t, "e2e-2", keys)
	sum2 := b.waitComplete(t, "e2e-2", 2*time.Minute)
	require.Equal(t, int64(160), sum2.Flips[results.FlipName(results.StatusLive, results.StatusNotLive)])
	rec, err := b.store.Get(ctx, "live-000.jpg")
	require.NoError(t, err)
	require.NotNil(t, rec.Previous)
	require.Equal(t, results.StatusLive, rec.Previous.Status)
	require.Equal(t, results.StatusNotLive, rec.Status)
}

func TestRedeliveredTaskCountedOnce(t *testing.T) {
	b := setup(t, kairostest.Config{}, nil)
	ctx := context.Background()
	b.put(t, "a.jpg", kairostest.JPEG(400, 400, 1))
	b.enqueue(t, "redeliver", []string{"a.jpg"})
	b.waitComplete(t, "redeliver", time.Minute)
	calls := b.emu.Stats().Total

	// The same task delivered again (as after a crash before the ack): asynq has
	// forgotten the finished task, so enqueue it again under a new id.
	task, err := enqueue.NewVerifyTask(enqueue.Payload{V: 1, Storage: b.storeURL, Key: "a.jpg", BatchID: "redeliver", EnqueuedAt: time.Now()})
	require.NoError(t, err)
	_, err = b.client.Enqueue(task, asynq.Queue(enqueue.DefaultQueue))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		qi, err := b.inspect.GetQueueInfo(enqueue.DefaultQueue)
		return err == nil && qi.Size == 0 && qi.Active == 0 && b.emu.Stats().Total > calls
	}, time.Minute, 20*time.Millisecond)
	sum, err := b.store.Batch(ctx, "redeliver")
	require.NoError(t, err)
	require.Equal(t, int64(1), sum.Done)
	var n int64
	for _, c := range sum.Counts {
		n += c
	}
	require.Equal(t, int64(1), n, "a redelivered task is not counted twice: %v", sum.Counts)
}

func TestRefusedCredentialsPauseQueue(t *testing.T) {
	b := setup(t, kairostest.Config{}, nil)
	ctx := context.Background()
	b.enqueueRefused(t, "creds", 20)
	require.Eventually(t, func() bool {
		qi, err := b.inspect.GetQueueInfo(enqueue.DefaultQueue)
		return err == nil && qi.Paused && strings.Contains(b.logs.String(), "refused the credentials")
	}, 30*time.Second, 20*time.Millisecond, "the queue is paused, and says why, when the API refuses the credentials")
	if n := strings.Count(b.logs.String(), `"message":"queue paused: `); n != 1 {
		t.Fatalf("%d pause errors, want one clear error, not one per task:\n%s", n, b.logs.String())
	}
	qi, err := b.inspect.GetQueueInfo(enqueue.DefaultQueue)
	require.NoError(t, err)
	require.Equal(t, 0, qi.Archived)

	// Fixed key, resumed queue: everything completes, no attempt was used up.
	// What `livenessq resume` does: clear the budget's pause, then unpause the queue.
	require.NoError(t, b.emu.SetFaults(kairostest.Faults{}))
	require.NoError(t, worker.ResumeBudget(ctx, b.rdb))
	require.NoError(t, b.inspect.UnpauseQueue(enqueue.DefaultQueue))
	sum := b.waitComplete(t, "creds", time.Minute)
	require.Equal(t, int64(20), sum.Done)
	require.NotContains(t, b.logs.String(), testAppKey)
}

// TestResumeDuringRefusalWins forces the race in which an operator fixes the key and
// resumes while a refusal is being handled: after the refusal passed the auth barrier
// and before its pause. The resume wins: the queue is not left paused behind it.
func TestResumeDuringRefusalWins(t *testing.T) {
	ctx := context.Background()
	var bundle atomic.Pointer[testBundle] // set once setup returns, read by the handlers
	var once sync.Once
	resumed := make(chan struct{})
	b := setup(t, kairostest.Config{}, nil, func(w *worker.Worker) {
		worker.WrapPause(w, func(pause func(context.Context, string) error) func(context.Context, string) error {
			return func(ctx context.Context, reason string) error {
				// The first refusal to get this far is overtaken by the operator's fix and
				// `livenessq resume` (clear the budget's pause, unpause the queue).
				once.Do(func() {
					b := bundle.Load()
					if err := b.emu.SetFaults(kairostest.Faults{}); err != nil {
						t.Error(err)
					}
					if err := worker.ResumeBudget(ctx, b.rdb); err != nil {
						t.Error(err)
					}
					_ = b.inspect.UnpauseQueue(enqueue.DefaultQueue) // not paused yet
					close(resumed)
				})
				return pause(ctx, reason)
			}
		})
	})
	bundle.Store(b)
	b.enqueueRefused(t, "race", 20)
	select {
	case <-resumed:
	case <-time.After(30 * time.Second):
		t.Fatal("no refusal reached the pause")
	}
	sum := b.waitComplete(t, "race", time.Minute)
	require.Equal(t, int64(20), sum.Done)
	qi, err := b.inspect.GetQueueInfo(enqueue.DefaultQueue)
	require.NoError(t, err)
	require.False(t, qi.Paused, "the resume came after the refusal's barrier: its pause is undone")
	st, err := worker.ReadBudgetState(ctx, b.rdb)
	require.NoError(t, err)
	require.False(t, st.Paused, "no pause record is left behind")
}
