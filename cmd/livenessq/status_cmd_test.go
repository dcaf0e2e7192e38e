package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/results"
	"github.com/livenessq/livenessq/storage"
)

// opsBundle is the world of the operator commands' tests: the test Redis (DB
// testenv.DBCommand, flushed), an S3 bucket holding n selfies under "selfies/" and one
// result JSON under "results/", and a results Store writing under "results/" there.
type opsBundle struct {
	ctx      context.Context
	rdb      *redis.Client
	redisURL string
	bucket   *storage.Bucket
	url      string
	s3env    []string
	store    *results.Store
	keys     []string
}

func opsSetup(t *testing.T, n int) *opsBundle {
	t.Helper()
	ob := &opsBundle{ctx: t.Context()}
	ob.rdb, ob.redisURL = cmdRedis(t)
	ob.bucket, ob.url, ob.s3env = cmdS3(t)
	for i := range n {
		key := fmt.Sprintf("selfies/s-%02d.jpg", i)
		require.NoError(t, ob.bucket.Put(ob.ctx, key, bytes.NewReader([]byte("not really a jpeg")), nil))
		ob.keys = append(ob.keys, key)
	}
	require.NoError(t, ob.bucket.Put(ob.ctx, "results/selfies/old.jpg.json", strings.NewReader("{}"), nil))
	var err error
	ob.store, err = results.New(results.Config{Redis: ob.rdb, Bucket: ob.bucket.Sub(DefaultResultsPrefix)})
	require.NoError(t, err)
	return ob
}

// env is the environment that points a child at the bundle's Redis and storage.
func (ob *opsBundle) env() []string {
	return append([]string{"LIVENESSQ_REDIS_URL=" + ob.redisURL, "LIVENESSQ_STORAGE_URL=" + ob.url}, ob.s3env...)
}

// record builds a result of key in batch.
func record(key, batch string, st results.Status, score float64) *results.Record {
	r := &results.Record{Key: key, Bucket: "selfies", BatchID: batch, Status: st, Threshold: 0.6,
		VerifiedAt: time.Now().UTC().Truncate(time.Second), Attempts: 1}
	if st.Scored() {
		live := score >= r.Threshold
		r.Score, r.Live = &score, &live
		r.Faces = 1
	}
	return r
}

// writeBatch records a batch with the given results, enqueued fully.
func (ob *opsBundle) writeBatch(t *testing.T, id string, recs ...*results.Record) {
	t.Helper()
	created, err := ob.store.CreateBatch(ob.ctx, results.BatchInfo{ID: id, Source: "test " + id, Storage: ob.url, Threshold: 0.6})
	require.NoError(t, err)
	require.True(t, created)
	require.NoError(t, ob.store.AddEnqueued(ob.ctx, id, int64(len(recs)), 0, 0))
	for _, r := range recs {
		_, err := ob.store.Write(ob.ctx, r)
		require.NoError(t, err)
	}
	_, err = ob.store.FinishEnqueue(ob.ctx, id)
	require.NoError(t, err)
}

// newTestEnqueuer returns an enqueue client on the bundle's Redis and store.
func newTestEnqueuer(t *testing.T, ob *opsBundle) *enqueue.Client {
	t.Helper()
	c, err := enqueue.New(enqueue.Config{Redis: ob.rdb, Batches: ob.store})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// statusJSON runs `status --json` with extra arguments and parses its document.
func statusJSON(t *testing.T, bin string, ob *opsBundle, args ...string) map[string]any {
	t.Helper()
	r := runCmd(t, bin, ob.env(), append([]string{"status", "--json"}, args...)...)
	require.Equal(t, 0, r.code, r.stderr)
	var doc map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &doc), r.stdout)
	return doc
}

func TestStatus(t *testing.T) {
	ob := opsSetup(t, 0)
	bin := buildBinary(t)

	// Before anything: the default queue, an unpublished budget, no batch.
	doc := statusJSON(t, bin, ob)
	require.Equal(t, []any{map[string]any{
		"name": "liveness", "pending": 0.0, "active": 0.0, "scheduled": 0.0, "retry": 0.0, "archived": 0.0,
		"completed": 0.0, "processed_today": 0.0, "failed_today": 0.0, "latency_seconds": 0.0, "paused": false,
	}}, doc["queues"])
	require.Equal(t, false, doc["budget"].(map[string]any)["configured"])
	require.Equal(t, []any{}, doc["batches"])

	// Batch one: a live result for k1. Batch two: 4 results, k1 now not live (a flip),
	// and one task still missing its result.
	ob.writeBatch(t, "b-one", record("k1", "b-one", results.StatusLive, 0.97))
	time.Sleep(1100 * time.Millisecond) // batches sort by creation second
	created, err := ob.store.CreateBatch(ob.ctx, results.BatchInfo{ID: "b-two", Source: "prefix selfies/", Threshold: 0.6})
	require.NoError(t, err)
	require.True(t, created)
	require.NoError(t, ob.store.AddEnqueued(ob.ctx, "b-two", 5, 1, 2))
	for _, r := range []*results.Record{
		record("k1", "b-two", results.StatusNotLive, 0.31),
		record("k2", "b-two", results.StatusLive, 0.91),
		record("k3", "b-two", results.StatusLive, 0.93),
		record("k4", "b-two", results.StatusNoFace, 0),
	} {
		_, err := ob.store.Write(ob.ctx, r)
		require.NoError(t, err)
	}
	_, err = ob.store.FinishEnqueue(ob.ctx, "b-two")
	require.NoError(t, err)

	// A queue asynq knows, with tasks in it.
	_, _, err = newTestEnqueuer(t, ob).EnqueueOne(ob.ctx, ob.url, "selfies/x.jpg", 0, "b-three")
	require.NoError(t, err)

	doc = statusJSON(t, bin, ob)
	q := doc["queues"].([]any)[0].(map[string]any)
	require.Equal(t, 1.0, q["pending"])
	batches := doc["batches"].([]any)
	require.Len(t, batches, 3)
	at := map[string]int{}
	for i, b := range batches {
		at[b.(map[string]any)["id"].(string)] = i
	}
	require.Less(t, at["b-two"], at["b-one"], "newest first")
	require.Contains(t, at, "b-three")
	two := batches[at["b-two"]].(map[string]any)
	want := map[string]any{
		"id": "b-two", "source": "prefix selfies/", "threshold": 0.6,
		"enqueued": 5.0, "duplicates": 1.0, "malformed": 2.0, "enqueue_done": true,
		"done": 4.0, "progress": 0.8, "complete": false,
		"counts": map[string]any{"live": 2.0, "not_live": 1.0, "no_face": 1.0, "invalid_image": 0.0,
			"rejected": 0.0, "not_found": 0.0, "failed": 0.0, "bad_task": 0.0},
		"flips": map[string]any{"live>not_live": 1.0},
	}
	hist := make([]any, results.HistogramBins)
	for i := range hist {
		hist[i] = 0.0
	}
	hist[6], hist[18] = 1.0, 2.0 // 0.31; 0.91 and 0.93
	want["histogram"] = hist
	delete(two, "created_at")
	delete(two, "updated_at")
	if d := cmp.Diff(want, two); d != "" {
		t.Errorf("status --json batch (-want +got):\n%s", d)
	}

	// One batch, as JSON and as text with its histogram drawn.
	one := statusJSON(t, bin, ob, "--batch", "b-two")["batch"].(map[string]any)
	require.Equal(t, "b-two", one["id"])
	require.Equal(t, 4.0, one["done"])
	r := runCmd(t, bin, ob.env(), "status", "--batch", "b-two")
	require.Equal(t, 0, r.code, r.stderr)
	for _, line := range []string{
		"Batch b-two",
		"  progress    4/5 (80.0%), running",
		"  live                  2   50.0%",
		"  live -> not_live                    1",
		"Score histogram (3 scored results, threshold 0.6):",
		"  0.30–0.35 " + strings.Repeat("#", 20) + strings.Repeat(" ", 20) + " 1",
		"  0.60–0.65 " + strings.Repeat(" ", 40) + " 0  ← threshold",
		"  0.90–0.95 " + strings.Repeat("#", 40) + " 2",
		"  0.95–1.00 " + strings.Repeat(" ", 40) + " 0",
	} {
		require.Contains(t, r.stdout, line+"\n")
	}

	// The overview as text.
	r = runCmd(t, bin, ob.env(), "status")
	require.Equal(t, 0, r.code, r.stderr)
	for _, s := range []string{"liveness  running        1", "API budget: not published yet", "b-two", "4/5", "80.0%",
		"live=2 not_live=1 no_face=1", "b-one", "complete"} {
		require.Contains(t, r.stdout, s)
	}

	// Errors: an unknown batch (1), bad flags (2, naming the flag).
	r = runCmd(t, bin, ob.env(), "status", "--batch", "nope")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, `batch "nope" not found`)
	for _, tc := range []struct{ args []string }{
		{[]string{"--interval", "1ms"}},
		{[]string{"--batches", "-1"}},
		{[]string{"--batch", "a{b}"}},
	} {
		r = runCmd(t, bin, ob.env(), append([]string{"status"}, tc.args...)...)
		require.Equal(t, 2, r.code, tc.args)
		require.Contains(t, r.stderr, tc.args[0], tc.args)
	}
	r = runCmd(t, bin, append(ob.env(), "LIVENESSQ_STATUS_INTERVAL=soon"), "status")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "$LIVENESSQ_STATUS_INTERVAL")
}

func TestStatusWatch(t *testing.T) {
	ob := opsSetup(t, 0)
	bin := buildBinary(t)
	p := startCmd(t, bin, ob.env(), "status", "--watch", "--interval", "100ms")
	eventually(t, 20*time.Second, func() bool { return strings.Count(p.stdout(), ansiClearHome) >= 3 },
		"status --watch redraws; printed:\n%q", p.stdout())
	ob.writeBatch(t, "b-watch", record("k1", "b-watch", results.StatusLive, 0.8))
	eventually(t, 20*time.Second, func() bool {
		out := p.stdout()
		return strings.Contains(out[strings.LastIndex(out, ansiClearHome):], "b-watch")
	}, "the redraw shows the new batch")
	p.signal(t, syscall.SIGINT)
	require.Equal(t, 0, p.wait(t, 20*time.Second), "ending a watch is a normal exit")

	// --watch --json prints one document a line.
	p = startCmd(t, bin, ob.env(), "status", "--watch", "--json", "--interval", "100ms")
	eventually(t, 20*time.Second, func() bool { return strings.Count(p.stdout(), "\n") >= 2 }, "two documents")
	p.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, p.wait(t, 20*time.Second))
	for _, line := range strings.Split(strings.TrimSpace(p.stdout()), "\n") {
		var doc statusReport
		require.NoError(t, json.Unmarshal([]byte(line), &doc), line)
		require.Len(t, doc.Batches, 1)
	}
	require.NotContains(t, p.stdout(), ansiClearHome)
}

func TestWriteHistogram(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	bins := make([]int64, results.HistogramBins)
	bins[0], bins[10], bins[19] = 1, 1000, 500
	writeHistogram(&b, bins, 10, 0.7)
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	require.Len(t, lines, results.HistogramBins)
	require.Equal(t, "  0.00–0.05 #          1", lines[0], "a non-empty bin shows at least one mark")
	require.Equal(t, "  0.05–0.10            0", lines[1])
	require.Equal(t, "  0.50–0.55 ########## 1000", lines[10])
	require.Equal(t, "  0.70–0.75            0  ← threshold", lines[14])
	require.Equal(t, "  0.95–1.00 #####      500", lines[19])
}
