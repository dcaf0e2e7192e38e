package enqueue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime/metrics"
	"slices"
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

	"github.com/livenessq/livenessq/internal/testenv"
	"github.com/livenessq/livenessq/results"
	"github.com/livenessq/livenessq/storage"
)

// testBundle is what a Redis test works with.
type testBundle struct {
	ctx     context.Context
	client  *Client
	store   *results.Store
	insp    *asynq.Inspector
	storage string // the storage location of the batches
}

// setup returns a Client on the flushed enqueue test DB, with a results.Store recording
// its batches and an independent asynq Inspector on the same DB.
func setup(t testing.TB, modify ...func(*Config)) *testBundle {
	t.Helper()
	rdb := testenv.Redis(t, testenv.DBEnqueue)
	local, err := storage.NewLocal(storage.LocalConfig{Root: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { local.Close() })
	store, err := results.New(results.Config{Redis: rdb, Bucket: local})
	require.NoError(t, err)
	cfg := Config{Redis: rdb, Batches: store}
	for _, m := range modify {
		m(&cfg)
	}
	c, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: testenv.RedisAddr(t), DB: testenv.DBEnqueue})
	t.Cleanup(func() { insp.Close() })
	return &testBundle{ctx: context.Background(), client: c, store: store, insp: insp, storage: local.URL()}
}

// tasks returns the payloads of every task in the queue by task id, and checks that
// each id is the one TaskID gives.
func (tb *testBundle) tasks(t testing.TB) map[string]Payload {
	t.Helper()
	info, err := tb.insp.GetQueueInfo(DefaultQueue)
	if err != nil && strings.Contains(err.Error(), "does not exist") {
		return map[string]Payload{}
	}
	require.NoError(t, err)
	require.Equal(t, info.Size, info.Pending, "every task is pending")
	got := make(map[string]Payload, info.Size)
	const pageSize = 1000
	for page := 1; ; page++ {
		list, err := tb.insp.ListPendingTasks(DefaultQueue, asynq.PageSize(pageSize), asynq.Page(page))
		require.NoError(t, err)
		for _, ti := range list {
			require.Equal(t, TaskType, ti.Type)
			p, err := ParsePayload(ti.Payload)
			require.NoError(t, err)
			require.Equal(t, TaskID(p.BatchID, p.Storage, p.Key), ti.ID)
			require.Equal(t, DefaultMaxRetry, ti.MaxRetry)
			got[ti.ID] = p
		}
		if len(list) < pageSize {
			break
		}
	}
	require.Len(t, got, info.Size)
	return got
}

// batch returns a batch's record.
func (tb *testBundle) batch(t testing.TB, id string) *results.BatchSummary {
	t.Helper()
	s, err := tb.store.Batch(tb.ctx, id)
	require.NoError(t, err)
	return s
}

// numbered is a Source of n keys "k/00001.jpg"... made as they are read.
func numbered(n int) Source {
	return func(yield func(Item, error) bool) {
		for i := 1; i <= n; i++ {
			if !yield(Item{Key: fmt.Sprintf("k/%05d.jpg", i), Line: i}, nil) {
				return
			}
		}
	}
}

func TestEnqueue(t *testing.T) {
	tb := setup(t)
	var mu sync.Mutex
	var calls []Progress
	sum, err := tb.client.Enqueue(tb.ctx, Batch{ID: "b1", Storage: tb.storage, Source: "test"}, numbered(1200), func(p Progress) {
		mu.Lock()
		calls = append(calls, p)
		mu.Unlock()
	})
	require.NoError(t, err)
	require.Equal(t, Summary{BatchID: "b1", Created: true, Enqueued: 1200, Finished: true, Duration: sum.Duration}, sum)

	tasks := tb.tasks(t)
	require.Len(t, tasks, 1200)
	p := tasks[TaskID("b1", tb.storage, "k/00007.jpg")]
	require.Equal(t, "k/00007.jpg", p.Key)
	require.Equal(t, tb.storage, p.Storage)
	require.Equal(t, "b1", p.BatchID)
	require.Equal(t, DefaultThreshold, *p.Threshold, "the batch's default threshold is written into each task")
	require.WithinDuration(t, time.Now(), p.EnqueuedAt, time.Minute)

	b := tb.batch(t, "b1")
	require.Equal(t, int64(1200), b.Enqueued)
	require.True(t, b.EnqueueDone)
	require.Equal(t, "test", b.Info.Source)
	require.Equal(t, tb.storage, b.Info.Storage)
	require.Equal(t, DefaultThreshold, b.Info.Threshold)

	require.NotEmpty(t, calls)
	last := calls[len(calls)-1]
	require.Equal(t, Progress{BatchID: "b1", Read: 1200, Enqueued: 1200, Elapsed: last.Elapsed}, last)
	for i := 1; i < len(calls); i++ {
		require.GreaterOrEqual(t, calls[i].Enqueued, calls[i-1].Enqueued, "progress only grows")
	}
}

func TestEnqueueGeneratesBatchID(t *testing.T) {
	tb := setup(t)
	sum, err := tb.client.Enqueue(tb.ctx, Batch{Storage: tb.storage, Threshold: 0.8, CallbackURL: "https://example.com/hook"}, Keys("a", "b"), nil)
	require.NoError(t, err)
	require.NoError(t, results.ValidateBatchID(sum.BatchID))
	require.Equal(t, int64(2), sum.Enqueued)
	b := tb.batch(t, sum.BatchID)
	require.Equal(t, 0.8, b.Info.Threshold)
	require.Equal(t, "https://example.com/hook", b.Info.CallbackURL)
	for _, p := range tb.tasks(t) {
		require.Equal(t, sum.BatchID, p.BatchID)
		require.Equal(t, 0.8, *p.Threshold)
	}
}

func TestEnqueueIsIdempotent(t *testing.T) {
	tb := setup(t)
	b := Batch{ID: "again", Storage: tb.storage}
	first, err := tb.client.Enqueue(tb.ctx, b, numbered(700), nil)
	require.NoError(t, err)
	require.Equal(t, int64(700), first.Enqueued)

	second, err := tb.client.Enqueue(tb.ctx, b, numbered(700), nil)
	require.NoError(t, err)
	require.False(t, second.Created, "the second run resumes the batch")
	require.Equal(t, int64(0), second.Enqueued)
	require.Equal(t, int64(700), second.Duplicates)
	require.Len(t, tb.tasks(t), 700, "no task was added twice")

	rec := tb.batch(t, "again")
	require.Equal(t, int64(700), rec.Enqueued)
	require.Equal(t, int64(700), rec.Duplicates)
}

func TestEnqueueDuplicateKeysInOneRun(t *testing.T) {
	tb := setup(t)
	sum, err := tb.client.Enqueue(tb.ctx, Batch{ID: "dups", Storage: tb.storage}, Keys("a", "b", "a", "a"), nil)
	require.NoError(t, err)
	require.Equal(t, int64(2), sum.Enqueued)
	require.Equal(t, int64(2), sum.Duplicates)
	require.Len(t, tb.tasks(t), 2)
}

func TestEnqueueInterruptedThenResumed(t *testing.T) {
	tb := setup(t)
	const n = 2000
	b := Batch{ID: "resume", Storage: tb.storage}

	// The first run is cancelled once 600 items have been read.
	ctx, cancel := context.WithCancel(tb.ctx)
	defer cancel()
	cancelling := func(yield func(Item, error) bool) {
		for it, err := range numbered(n) {
			if it.Line == 600 {
				cancel()
			}
			if !yield(it, err) {
				return
			}
		}
	}
	first, err := tb.client.Enqueue(ctx, b, cancelling, nil)
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, first.Finished)
	require.Less(t, first.Enqueued, int64(n))
	queued := len(tb.tasks(t))
	require.Less(t, queued, n)
	require.GreaterOrEqual(t, int64(queued), first.Enqueued)
	rec := tb.batch(t, "resume")
	require.False(t, rec.EnqueueDone)
	require.Equal(t, first.Enqueued, rec.Enqueued, "the counts of an interrupted run are recorded")

	second, err := tb.client.Enqueue(tb.ctx, b, numbered(n), nil)
	require.NoError(t, err)
	require.True(t, second.Finished)
	require.Equal(t, int64(n), second.Enqueued+second.Duplicates)
	require.Equal(t, int64(n-queued), second.Enqueued, "the re-run adds only what was missing")
	require.Len(t, tb.tasks(t), n, "exactly one task per key")
	rec = tb.batch(t, "resume")
	require.True(t, rec.EnqueueDone)
	require.Equal(t, first.Enqueued+second.Enqueued, rec.Enqueued)
}

func TestEnqueueSameKeyNewBatch(t *testing.T) {
	tb := setup(t)
	for _, id := range []string{"night-1", "night-2"} {
		sum, err := tb.client.Enqueue(tb.ctx, Batch{ID: id, Storage: tb.storage}, Keys("same.jpg"), nil)
		require.NoError(t, err)
		require.Equal(t, int64(1), sum.Enqueued, "batch %s", id)
	}
	tasks := tb.tasks(t)
	require.Len(t, tasks, 2)
	require.Contains(t, tasks, TaskID("night-1", tb.storage, "same.jpg"))
	require.Contains(t, tasks, TaskID("night-2", tb.storage, "same.jpg"))
}

func TestEnqueueManifestWithMalformedRows(t *testing.T) {
	tb := setup(t)
	manifest := "key,threshold\n" + // 1
		"a.jpg,0.9\n" + // 2
		"b.jpg,\n" + // 3 batch default
		",0.5\n" + // 4 missing key
		"c.jpg,-1\n" + // 5
		"d.jpg,2\n" + // 6
		"e.jpg,NaN\n" + // 7
		"bad\x00key.jpg,0.5\n" + // 8 NUL in key: refused by the task, not the parser
		"f g ü.jpg,0\n" // 9
	sum, err := tb.client.Enqueue(tb.ctx, Batch{ID: "m", Storage: tb.storage, Threshold: 0.7},
		Manifest(strings.NewReader(manifest), ManifestAuto), nil)
	require.NoError(t, err)
	require.True(t, sum.Finished, "malformed rows do not stop the run")
	require.Equal(t, int64(3), sum.Enqueued)
	require.Equal(t, int64(5), sum.Malformed)
	var lines []int
	var msgs []string
	for _, e := range sum.Errors {
		lines = append(lines, e.Line)
		msgs = append(msgs, e.Error())
	}
	require.Equal(t, []int{4, 5, 6, 7, 8}, lines)
	require.Contains(t, msgs, `line 6 (key "d.jpg"): threshold must be a number in [0, 1], got 2`)
	require.Contains(t, msgs, `line 8 (key "bad\x00key.jpg"): invalid key: key contains a NUL byte`)

	thresholds := map[string]float64{}
	for _, p := range tb.tasks(t) {
		thresholds[p.Key] = *p.Threshold
	}
	require.Equal(t, map[string]float64{"a.jpg": 0.9, "b.jpg": 0.7, "f g ü.jpg": 0}, thresholds)
	rec := tb.batch(t, "m")
	require.Equal(t, int64(3), rec.Enqueued)
	require.Equal(t, int64(5), rec.Malformed)
}

// flakyBatches is the real results.Store whose next AddEnqueued calls fail.
type flakyBatches struct {
	*results.Store
	failures atomic.Int32
}

func (f *flakyBatches) AddEnqueued(ctx context.Context, id string, enqueued, duplicates, malformed int64) error {
	if f.failures.Add(-1) >= 0 {
		return errors.New("injected AddEnqueued failure")
	}
	return f.Store.AddEnqueued(ctx, id, enqueued, duplicates, malformed)
}

func TestEnqueueCounterUpdateFailuresAreRetried(t *testing.T) {
	var flaky *flakyBatches
	var logs bytes.Buffer
	tb := setup(t, func(c *Config) {
		flaky = &flakyBatches{Store: c.Batches.(*results.Store)}
		flaky.failures.Store(finalAttempts - 1) // the last update is tried finalAttempts times
		c.Batches = flaky
		c.Logger = zerolog.New(&logs)
	})
	sum, err := tb.client.Enqueue(tb.ctx, Batch{ID: "flaky", Storage: tb.storage}, numbered(3000), nil)
	require.NoError(t, err)
	require.Equal(t, int64(3000), sum.Enqueued)
	require.Equal(t, int64(3000), tb.batch(t, "flaky").Enqueued, "nothing lost, nothing counted twice")
	require.Contains(t, logs.String(), "injected AddEnqueued failure")
}

// failingRedis is the real Redis whose EVALSHA fails after the first ok calls.
type failingRedis struct {
	redis.UniversalClient
	ok atomic.Int64
}

func (f *failingRedis) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	if f.ok.Add(-1) < 0 {
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(errors.New("injected Redis failure"))
		return cmd
	}
	return f.UniversalClient.EvalSha(ctx, sha, keys, args...)
}

func TestEnqueueStopsOnRedisError(t *testing.T) {
	tb := setup(t, func(c *Config) {
		f := &failingRedis{UniversalClient: c.Redis}
		f.ok.Store(100)
		c.Redis = f
	})
	tb.client.senders = 0 // asynq calls failingRedis.EvalSha itself
	sum, err := tb.client.Enqueue(tb.ctx, Batch{ID: "down", Storage: tb.storage}, numbered(5000), nil)
	require.ErrorContains(t, err, "injected Redis failure")
	require.False(t, sum.Finished)
	require.LessOrEqual(t, sum.Enqueued, int64(100))
	rec := tb.batch(t, "down")
	require.False(t, rec.EnqueueDone)
	require.Equal(t, sum.Enqueued, rec.Enqueued)
	require.Len(t, tb.tasks(t), int(sum.Enqueued))
}

func TestEnqueueLogs(t *testing.T) {
	var logs bytes.Buffer
	tb := setup(t, func(c *Config) { c.Logger = zerolog.New(&logs) })
	_, err := tb.client.Enqueue(tb.ctx, Batch{ID: "logs", Storage: tb.storage, Source: "manifest m.csv"},
		Manifest(strings.NewReader("key,threshold\na,2\nb,\n"), ManifestAuto), nil)
	require.NoError(t, err)
	var events []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var ev map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &ev), line)
		require.Equal(t, "logs", ev["batch_id"], "every event names the batch")
		delete(ev, "duration")
		events = append(events, ev)
	}
	want := []map[string]any{
		{"level": "info", "batch_id": "logs", "source": "manifest m.csv", "storage": tb.storage, "resumed": false, "message": "enqueue started"},
		{"level": "warn", "batch_id": "logs", "line": 2.0, "key": "a", "error": "threshold must be a number in [0, 1], got 2", "message": "row skipped"},
		{"level": "info", "batch_id": "logs", "enqueued": 1.0, "duplicates": 0.0, "malformed": 1.0, "finished": true, "message": "enqueue ended"},
	}
	if diff := cmp.Diff(want, events); diff != "" {
		t.Errorf("log events (-want +got):\n%s", diff)
	}
}

func TestEnqueueCapsReportedErrors(t *testing.T) {
	tb := setup(t)
	var sb strings.Builder
	for i := range 250 {
		fmt.Fprintf(&sb, "{\"key\":\"k%d\",\"threshold\":%d}\n", i, 2+i%2) // every row bad
	}
	sb.WriteString(`{"key":"good"}` + "\n")
	sum, err := tb.client.Enqueue(tb.ctx, Batch{ID: "cap", Storage: tb.storage}, Manifest(strings.NewReader(sb.String()), ManifestJSONL), nil)
	require.NoError(t, err)
	require.Equal(t, int64(250), sum.Malformed)
	require.Len(t, sum.Errors, MaxReportedErrors)
	require.Equal(t, 1, sum.Errors[0].Line)
	require.Equal(t, int64(1), sum.Enqueued)
	require.Equal(t, int64(250), tb.batch(t, "cap").Malformed)
}

func TestEnqueueBadThresholds(t *testing.T) {
	tb := setup(t)
	for _, thr := range []float64{-1, 2, math.NaN()} {
		_, err := tb.client.Enqueue(tb.ctx, Batch{ID: "thr", Storage: tb.storage, Threshold: thr}, Keys("a"), nil)
		require.ErrorIs(t, err, ErrBadThreshold)
		require.Contains(t, err.Error(), fmt.Sprintf("threshold must be a number in [0, 1], got %v", thr))

		_, _, err = tb.client.EnqueueOne(tb.ctx, tb.storage, "a", thr, "")
		require.ErrorIs(t, err, ErrBadThreshold)
		require.Equal(t, fmt.Sprintf("threshold must be a number in [0, 1], got %v", thr), err.Error())
	}
	_, err := tb.store.Batch(tb.ctx, "thr")
	require.ErrorIs(t, err, results.ErrBatchNotFound, "a refused batch leaves no record")
	require.Empty(t, tb.tasks(t))
}

func TestEnqueueBadBatch(t *testing.T) {
	tb := setup(t)
	tests := []struct {
		desc string
		b    Batch
		want error
	}{
		{desc: "no storage", b: Batch{ID: "x"}, want: ErrBadBatch},
		{desc: "storage with credentials", b: Batch{ID: "x", Storage: "s3://key:secret@bucket"}, want: ErrBadBatch},
		{desc: "bad id", b: Batch{ID: "a{b}", Storage: tb.storage}, want: results.ErrInvalidBatchID},
		{desc: "callback not http", b: Batch{ID: "x", Storage: tb.storage, CallbackURL: "file:///etc/passwd"}, want: ErrBadBatch},
		{desc: "callback relative", b: Batch{ID: "x", Storage: tb.storage, CallbackURL: "/hook"}, want: ErrBadBatch},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			_, err := tb.client.Enqueue(tb.ctx, tt.b, Keys("a"), nil)
			require.ErrorIs(t, err, tt.want)
			require.NotContains(t, err.Error(), "secret")
		})
	}
	require.Empty(t, tb.tasks(t))
}

func TestEnqueueFatalSourceError(t *testing.T) {
	tb := setup(t)
	boom := errors.New("disk on fire")
	src := func(yield func(Item, error) bool) {
		for it := range numbered(10) {
			if !yield(it, nil) {
				return
			}
		}
		yield(Item{}, boom)
	}
	sum, err := tb.client.Enqueue(tb.ctx, Batch{ID: "fatal", Storage: tb.storage}, src, nil)
	require.ErrorIs(t, err, boom)
	require.False(t, sum.Finished)
	require.Equal(t, int64(10), sum.Enqueued)
	rec := tb.batch(t, "fatal")
	require.False(t, rec.EnqueueDone, "a batch whose source failed is not finished")
	require.Equal(t, int64(10), rec.Enqueued)
}

func TestEnqueueOne(t *testing.T) {
	tb := setup(t)
	id, batch, err := tb.client.EnqueueOne(tb.ctx, tb.storage, "one.jpg", 0.75, "")
	require.NoError(t, err)
	require.NoError(t, results.ValidateBatchID(batch))
	require.Equal(t, TaskID(batch, tb.storage, "one.jpg"), id)
	p := tb.tasks(t)[id]
	require.Equal(t, 0.75, *p.Threshold)
	rec := tb.batch(t, batch)
	require.Equal(t, int64(1), rec.Enqueued)
	require.True(t, rec.EnqueueDone, "a batch made for one key is finished")

	// Again in the same batch: the same task, no duplicate.
	id2, batch2, err := tb.client.EnqueueOne(tb.ctx, tb.storage, "one.jpg", 0.75, batch)
	require.NoError(t, err)
	require.Equal(t, id, id2)
	require.Equal(t, batch, batch2)
	require.Len(t, tb.tasks(t), 1)
	require.Equal(t, int64(1), tb.batch(t, batch).Duplicates)

	// Into a batch that is still being enqueued: counted, not finished.
	_, err = tb.client.Enqueue(tb.ctx, Batch{ID: "open", Storage: tb.storage}, func(yield func(Item, error) bool) {
		yield(Item{}, errors.New("stop here"))
	}, nil)
	require.Error(t, err)
	_, _, err = tb.client.EnqueueOne(tb.ctx, tb.storage, "two.jpg", 0, "open")
	require.NoError(t, err)
	rec = tb.batch(t, "open")
	require.Equal(t, int64(1), rec.Enqueued)
	require.False(t, rec.EnqueueDone, "EnqueueOne does not finish a batch it did not create")

	for _, key := range []string{"", "a\x00b", strings.Repeat("x", MaxKeyLen+1)} {
		_, _, err := tb.client.EnqueueOne(tb.ctx, tb.storage, key, 0, "")
		require.ErrorIs(t, err, ErrBadKey)
	}
	require.Len(t, tb.tasks(t), 2)
}

func TestEnqueueConfig(t *testing.T) {
	tb := setup(t, func(c *Config) {
		c.Queue = "other"
		c.MaxRetry = 3
		c.Retention = time.Hour
		c.Timeout = time.Minute
		c.InFlight = 1
	})
	sum, err := tb.client.Enqueue(tb.ctx, Batch{ID: "cfg", Storage: tb.storage}, numbered(5), nil)
	require.NoError(t, err)
	require.Equal(t, int64(5), sum.Enqueued)
	ti, err := tb.insp.GetTaskInfo("other", TaskID("cfg", tb.storage, "k/00001.jpg"))
	require.NoError(t, err)
	require.Equal(t, 3, ti.MaxRetry)
	require.Equal(t, time.Hour, ti.Retention)
	require.Equal(t, time.Minute, ti.Timeout)
	info, err := tb.insp.GetQueueInfo("other")
	require.NoError(t, err)
	require.Equal(t, 5, info.Pending)
}

func TestClosedClient(t *testing.T) {
	tb := setup(t)
	require.NoError(t, tb.client.Close())
	require.NoError(t, tb.client.Close())
	_, err := tb.client.Enqueue(tb.ctx, Batch{Storage: tb.storage}, Keys("a"), nil)
	require.ErrorIs(t, err, ErrClosed)
	_, _, err = tb.client.EnqueueOne(tb.ctx, tb.storage, "a", 0, "")
	require.ErrorIs(t, err, ErrClosed)
}

func TestNewConfigErrors(t *testing.T) {
	t.Parallel()
	store := &results.Store{}
	rdb := testRedisClient()
	t.Cleanup(func() { rdb.Close() })
	tests := []struct {
		desc string
		cfg  Config
		want string
	}{
		{desc: "no redis", cfg: Config{Batches: store}, want: "Config.Redis is required"},
		{desc: "no batches", cfg: Config{Redis: rdb}, want: "Config.Batches is required"},
		{desc: "negative retry", cfg: Config{Redis: rdb, Batches: store, MaxRetry: -1}, want: "MaxRetry -1 is negative"},
		{desc: "short retention", cfg: Config{Redis: rdb, Batches: store, Retention: time.Millisecond}, want: "under one second"},
		{desc: "negative in flight", cfg: Config{Redis: rdb, Batches: store, InFlight: -2}, want: "InFlight -2 is negative"},
		{desc: "negative timeout", cfg: Config{Redis: rdb, Batches: store, Timeout: -time.Second}, want: "Timeout -1s is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			_, err := New(tt.cfg)
			require.ErrorContains(t, err, tt.want)
		})
	}
	c, err := New(Config{Redis: rdb, Batches: store})
	require.NoError(t, err)
	require.Equal(t, DefaultInFlight, c.inFlight)
}

// keysOf returns the sorted keys of the tasks.
func keysOf(tasks map[string]Payload) []string {
	keys := make([]string, 0, len(tasks))
	for _, p := range tasks {
		keys = append(keys, p.Key)
	}
	slices.Sort(keys)
	return keys
}

// testRedisClient returns a client that is never used to connect.
func testRedisClient() redis.UniversalClient {
	return redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
}

func TestEnqueuePrefixS3(t *testing.T) {
	var logs bytes.Buffer
	tb := setup(t, func(c *Config) { c.Logger = zerolog.New(&logs) })
	srv := testenv.S3Server(t)
	bucket, err := storage.NewS3(tb.ctx, storage.S3Config{
		Bucket: testenv.BucketName(t), Endpoint: srv.Endpoint, Region: srv.Region, PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, CreateBucket: true,
	})
	require.NoError(t, err)
	t.Cleanup(func() { bucket.Close() })

	const n = 3000
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("selfies/%04d/%d.jpg", i/100, i))
	}
	// Results in the same bucket, and an object outside the prefix, are not enqueued.
	others := []string{"selfies/results/0001/1.jpg.json", "elsewhere/x.jpg"}
	t0 := time.Now()
	putAll(t, bucket, append(slices.Clone(want), others...))
	t.Logf("put %d objects in %v", n+len(others), time.Since(t0))
	slices.Sort(want)
	t0 = time.Now()
	defer func() { t.Logf("listed and enqueued in %v", time.Since(t0)) }()

	sum, err := tb.client.Enqueue(tb.ctx, Batch{ID: "prefix", Storage: bucket.URL(), Source: "prefix selfies/"},
		Prefix(tb.ctx, bucket, "selfies/", "selfies/results/"), nil)
	require.NoError(t, err)
	require.Equal(t, int64(n), sum.Enqueued)
	tasks := tb.tasks(t)
	if diff := cmp.Diff(want, keysOf(tasks)); diff != "" {
		t.Fatalf("enqueued keys (-want +got):\n%s", diff)
	}
	for _, p := range tasks {
		require.Equal(t, bucket.URL(), p.Storage)
		break
	}
	require.NotContains(t, bucket.URL(), srv.SecretKey)
	require.Contains(t, logs.String(), "enqueue ended")
	require.NotContains(t, logs.String(), srv.SecretKey)
	require.Equal(t, int64(n), tb.batch(t, "prefix").Enqueued)
}

// putAll writes a small object at each key, a few at a time.
func putAll(t testing.TB, b *storage.Bucket, keys []string) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	errs := make(chan error, len(keys))
	for _, k := range keys {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs <- b.Put(context.Background(), k, strings.NewReader("x"), &storage.PutOptions{Size: 1})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// BenchmarkEnqueue compares Client.Enqueue with the loop it replaces, asynq's Enqueue
// called for one task at a time on the same Redis: the ratio of their ns/op is the
// speed-up. concurrent-no-pipeline is Enqueue without its pipelining, for comparison;
// ratio measures both in alternation, 2,000 tasks at a time, so that a machine whose load
// changes during the run does not favour either, and reports the speed-up itself.
// concurrent also reports the peak live heap seen during the run, which must not grow
// with b.N.
func BenchmarkEnqueue(b *testing.B) {
	b.Run("sequential", func(b *testing.B) {
		tb := setup(b)
		b.ReportAllocs()
		b.ResetTimer()
		sequential(b, tb, "seq", 0, b.N)
	})
	concurrent := func(senders int) func(b *testing.B) {
		return func(b *testing.B) {
			tb := setup(b)
			tb.client.senders = senders
			var peak uint64
			b.ReportAllocs()
			b.ResetTimer()
			concurrently(b, tb, "conc", 0, b.N, func(Progress) { peak = max(peak, liveHeap()) })
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		}
	}
	b.Run("concurrent", concurrent(pipelineSenders))
	b.Run("concurrent-no-pipeline", concurrent(0))
	b.Run("ratio", func(b *testing.B) {
		tb := setup(b)
		const chunk = 2000
		var seq, conc time.Duration
		for i := range b.N {
			t0 := time.Now()
			sequential(b, tb, fmt.Sprintf("seq-%d", i), 0, chunk)
			t1 := time.Now()
			concurrently(b, tb, fmt.Sprintf("conc-%d", i), 0, chunk, nil)
			seq, conc = seq+t1.Sub(t0), conc+time.Since(t1)
		}
		b.ReportMetric(float64(seq.Nanoseconds())/float64(b.N*chunk), "seq-ns/task")
		b.ReportMetric(float64(conc.Nanoseconds())/float64(b.N*chunk), "conc-ns/task")
		b.ReportMetric(float64(seq)/float64(conc), "speedup")
	})
}

// sequential enqueues keys from+1..from+n of batch one at a time with asynq's Enqueue.
func sequential(b *testing.B, tb *testBundle, batch string, from, n int) {
	aq := asynq.NewClientFromRedisClient(tb.client.rdb)
	for i := from + 1; i <= from+n; i++ {
		key := fmt.Sprintf("k/%05d.jpg", i)
		thr := DefaultThreshold
		task, err := NewVerifyTask(Payload{Storage: tb.storage, Key: key, Threshold: &thr, BatchID: batch})
		if err != nil {
			b.Fatal(err)
		}
		opts := append(slices.Clone(tb.client.opts), asynq.TaskID(TaskID(batch, tb.storage, key)))
		if _, err := aq.EnqueueContext(tb.ctx, task, opts...); err != nil {
			b.Fatal(err)
		}
	}
}

// concurrently enqueues n keys of batch with Client.Enqueue.
func concurrently(b *testing.B, tb *testBundle, batch string, from, n int, progress func(Progress)) {
	sum, err := tb.client.Enqueue(tb.ctx, Batch{ID: batch, Storage: tb.storage}, numbered(n), progress)
	if err != nil {
		b.Fatal(err)
	}
	if sum.Enqueued != int64(n) {
		b.Fatalf("enqueued %d, want %d", sum.Enqueued, n)
	}
}

// liveHeap returns the bytes of live heap objects, as of the last GC.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// BenchmarkEnqueuePrefix is issue 8's enqueue figure on a smaller scale: the keys of an
// S3 prefix listed and enqueued by Enqueue(Prefix(...)), against listing them all first
// and then calling asynq's Enqueue one at a time. Each iteration enqueues every key once,
// as a new batch; ratio alternates the two and reports the speed-up; list-only is the
// listing alone, the floor of both. The bucket is made once and kept on the test server
// for later runs.
func BenchmarkEnqueuePrefix(b *testing.B) {
	const n = 5000
	srv := testenv.S3Server(b)
	bucket, err := storage.NewS3(context.Background(), storage.S3Config{
		Bucket: fmt.Sprintf("bench-enqueue-prefix-%d", n), Endpoint: srv.Endpoint, Region: srv.Region, PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, CreateBucket: true,
	})
	require.NoError(b, err)
	b.Cleanup(func() { bucket.Close() })
	have := map[string]bool{}
	for a, err := range bucket.List(context.Background(), "") {
		require.NoError(b, err)
		have[a.Key] = true
	}
	var missing []string
	for i := range n {
		if k := fmt.Sprintf("p/%05d.jpg", i); !have[k] {
			missing = append(missing, k)
		}
	}
	putAll(b, bucket, missing)

	loop := func(b *testing.B, tb *testBundle, batch string) {
		var keys []string
		for a, err := range bucket.List(tb.ctx, "p/") {
			if err != nil {
				b.Fatal(err)
			}
			keys = append(keys, a.Key)
		}
		aq := asynq.NewClientFromRedisClient(tb.client.rdb)
		for _, key := range keys {
			thr := DefaultThreshold
			task, err := NewVerifyTask(Payload{Storage: bucket.URL(), Key: key, Threshold: &thr, BatchID: batch})
			if err != nil {
				b.Fatal(err)
			}
			opts := append(slices.Clone(tb.client.opts), asynq.TaskID(TaskID(batch, bucket.URL(), key)))
			if _, err := aq.EnqueueContext(tb.ctx, task, opts...); err != nil {
				b.Fatal(err)
			}
		}
	}
	streamed := func(b *testing.B, tb *testBundle, batch string) {
		sum, err := tb.client.Enqueue(tb.ctx, Batch{ID: batch, Storage: bucket.URL()}, Prefix(tb.ctx, bucket, "p/"), nil)
		if err != nil {
			b.Fatal(err)
		}
		if sum.Enqueued != n {
			b.Fatalf("enqueued %d, want %d", sum.Enqueued, n)
		}
	}
	b.Run("list-only", func(b *testing.B) {
		for range b.N {
			count := 0
			for _, err := range Prefix(context.Background(), bucket, "p/") {
				if err != nil {
					b.Fatal(err)
				}
				count++
			}
			if count != n {
				b.Fatalf("listed %d, want %d", count, n)
			}
		}
	})
	b.Run("list-then-loop", func(b *testing.B) {
		tb := setup(b)
		for i := range b.N {
			loop(b, tb, fmt.Sprintf("loop-%d", i))
		}
	})
	b.Run("streamed", func(b *testing.B) {
		tb := setup(b)
		for i := range b.N {
			streamed(b, tb, fmt.Sprintf("streamed-%d", i))
		}
	})
	b.Run("ratio", func(b *testing.B) {
		tb := setup(b)
		var slow, fast time.Duration
		for i := range b.N {
			t0 := time.Now()
			loop(b, tb, fmt.Sprintf("loop-%d", i))
			t1 := time.Now()
			streamed(b, tb, fmt.Sprintf("streamed-%d", i))
			slow, fast = slow+t1.Sub(t0), fast+time.Since(t1)
		}
		b.ReportMetric(float64(slow)/float64(fast), "speedup")
	})
}
