package results

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/internal/testenv"
	"github.com/livenessq/livenessq/storage"
)

// backend opens an empty result bucket for one test.
type backend struct {
	name string
	open func(t *testing.T) *storage.Bucket
}

var backends = []backend{
	{name: "local", open: openLocal},
	{name: "s3", open: openS3},
}

func openLocal(t *testing.T) *storage.Bucket {
	t.Helper()
	b, err := storage.NewLocal(storage.LocalConfig{Root: t.TempDir(), Create: true})
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	return b
}

func openS3(t *testing.T) *storage.Bucket {
	t.Helper()
	srv := testenv.S3Server(t)
	name := testenv.BucketName(t)
	b, err := storage.NewS3(context.Background(), storage.S3Config{
		Bucket: name, Prefix: "results", Endpoint: srv.Endpoint, Region: srv.Region, PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, CreateBucket: true,
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		removeBucket(t, b, srv, name)
		b.Close()
	})
	return b
}

// removeBucket deletes every object of b, then the bucket.
func removeBucket(t *testing.T, b *storage.Bucket, srv testenv.S3, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for a, err := range b.List(ctx, "") {
		if err != nil {
			t.Logf("cleanup: list %s: %v", name, err)
			return
		}
		if err := b.Delete(ctx, a.Key); err != nil {
			t.Logf("cleanup: delete %q: %v", a.Key, err)
		}
	}
	client, done := srv.Client()
	defer done()
	if _, err := client.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Logf("cleanup: delete bucket %s: %v", name, err)
	}
}

// forEachBackend runs fn as one subtest per storage backend (sequentially: they share
// the test Redis DB).
func forEachBackend(t *testing.T, fn func(t *testing.T, open func(*testing.T) *storage.Bucket)) {
	t.Helper()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) { fn(t, be.open) })
	}
}

type testBundle struct {
	ctx    context.Context
	rdb    *redis.Client
	bucket *storage.Bucket
	store  *Store
}

// setup returns a Store on a flushed test Redis DB and a fresh bucket from open.
func setup(t *testing.T, open func(*testing.T) *storage.Bucket, edit ...func(*Config)) *testBundle {
	t.Helper()
	rdb := testenv.Redis(t, testenv.DBResults)
	bucket := open(t)
	cfg := Config{Redis: rdb, Bucket: bucket}
	for _, e := range edit {
		e(&cfg)
	}
	store, err := New(cfg)
	require.NoError(t, err)
	return &testBundle{ctx: t.Context(), rdb: rdb, bucket: bucket, store: store}
}

// newRecord returns a plausible record; a scored status gets score (live is derived).
func newRecord(key, batch string, status Status, score float64) *Record {
	r := &Record{
		Key: key, Bucket: "selfies", ETag: "etag-" + key, BatchID: batch, Status: status,
		Threshold: 0.6, Attempts: 1, VerifiedAt: time.Now().UTC(),
	}
	if status.Scored() {
		r.Score = ptr(score)
		r.Live = ptr(score >= r.Threshold)
		r.Faces = 1
		r.Image = &Image{Format: "jpeg", Width: 1000, Height: 1200, Bytes: 123456}
		r.Kairos = &Kairos{APIReqUID: "uid-" + key, RequestID: "req-" + key, ResponseCode: 2}
	} else {
		r.Reason = "because " + string(status)
	}
	return r
}

// writeRedis does what Write does but the storage write.
func (tb *testBundle) writeRedis(ctx context.Context, r *Record) error {
	data, err := tb.store.prepare(ctx, r, &writeOptions{})
	if err != nil {
		return err
	}
	_, err = tb.store.record(ctx, r, data, nil)
	return err
}

func (tb *testBundle) write(t *testing.T, r *Record) WriteOutcome {
	t.Helper()
	out, err := tb.store.Write(tb.ctx, r)
	require.NoError(t, err)
	return out
}

// storedJSON returns the result JSON of key in storage.
func (tb *testBundle) storedJSON(t *testing.T, key string) []byte {
	t.Helper()
	r, err := tb.bucket.Get(tb.ctx, key+".json", nil)
	require.NoError(t, err)
	defer r.Close()
	b, err := io.ReadAll(r)
	require.NoError(t, err)
	return b
}

func (tb *testBundle) summary(t *testing.T, id string) *BatchSummary {
	t.Helper()
	s, err := tb.store.Batch(tb.ctx, id)
	require.NoError(t, err)
	return s
}

func TestNew(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	t.Cleanup(func() { rdb.Close() })
	bucket, err := storage.NewLocal(storage.LocalConfig{Root: t.TempDir(), Create: true})
	require.NoError(t, err)

	_, err = New(Config{Bucket: bucket})
	require.ErrorContains(t, err, "Config.Redis")
	_, err = New(Config{Redis: rdb})
	require.ErrorContains(t, err, "Config.Bucket")
	_, err = New(Config{Redis: rdb, Bucket: bucket, Retention: time.Millisecond})
	require.ErrorContains(t, err, "Retention")

	s, err := New(Config{Redis: rdb, Bucket: bucket})
	require.NoError(t, err)
	require.Equal(t, int64(DefaultRetention/time.Second), s.ttlSeconds())
	s, err = New(Config{Redis: rdb, Bucket: bucket, Retention: -1})
	require.NoError(t, err)
	require.Zero(t, s.ttlSeconds())
}

func TestWriteGetRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(*testing.T) *storage.Bucket) {
		tb := setup(t, open)
		want := fullRecord()
		want.Previous = nil
		want.VerifiedAt = time.Date(2026, 11, 27, 13, 15, 1, 0, time.FixedZone("CET", 3600))
		out := tb.write(t, want)
		require.Equal(t, WriteOutcome{}, out)
		require.Equal(t, time.UTC, want.VerifiedAt.Location(), "Write normalises times to UTC")

		got, err := tb.store.Get(tb.ctx, want.Key)
		require.NoError(t, err)
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("Get (-want +got):\n%s", d)
		}
		wantJSON, err := MarshalRecord(want)
		require.NoError(t, err)
		require.Equal(t, string(wantJSON), string(tb.storedJSON(t, want.Key)))

		flat, err := tb.rdb.HGetAll(tb.ctx, ResultKey(want.Key)).Result()
		require.NoError(t, err)
		if d := cmp.Diff(map[string]string{
			"json": string(wantJSON), "status": "live", "score": "0.9312",
			"verified_at": "2026-11-27T12:15:01Z", "batch_id": want.BatchID,
		}, flat); d != "" {
			t.Errorf("latest-result hash (-want +got):\n%s", d)
		}
		inBatch, err := tb.rdb.HGet(tb.ctx, BatchResultsKey(want.BatchID), want.Key).Result()
		require.NoError(t, err)
		require.Equal(t, string(wantJSON), inBatch)

		_, err = tb.store.Get(tb.ctx, "selfies/none.jpg")
		require.ErrorIs(t, err, ErrNotFound)
	})
}

func TestWriteWithoutBatch(t *testing.T) {
	tb := setup(t, openLocal)
	r := newRecord("a.jpg", "", StatusNotFound, 0)
	require.Equal(t, WriteOutcome{}, tb.write(t, r))
	got, err := tb.store.Get(tb.ctx, "a.jpg")
	require.NoError(t, err)
	require.Equal(t, StatusNotFound, got.Status)
	keys, err := tb.rdb.Keys(tb.ctx, KeyPrefix+"{batch*").Result()
	require.NoError(t, err)
	require.Empty(t, keys)

	_, err = tb.store.Write(tb.ctx, &Record{Key: "b.jpg", Status: "odd"})
	require.ErrorIs(t, err, ErrInvalidRecord)
}

func TestGetFallsBackToStorage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(*testing.T) *storage.Bucket) {
		tb := setup(t, open)
		want := newRecord("dir/a.jpg", "b1", StatusNotLive, 0.31)
		tb.write(t, want)
		require.NoError(t, tb.rdb.Del(tb.ctx, ResultKey(want.Key)).Err())

		got, err := tb.store.Get(tb.ctx, want.Key)
		require.NoError(t, err)
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("Get from storage (-want +got):\n%s", d)
		}

		require.NoError(t, tb.bucket.Delete(tb.ctx, want.Key+".json"))
		_, err = tb.store.Get(tb.ctx, want.Key)
		require.ErrorIs(t, err, ErrNotFound)
	})
}

// TestWritePreviousAndFlips: a second batch records each key's previous result and
// counts the status changes.
func TestWritePreviousAndFlips(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(*testing.T) *storage.Bucket) {
		tb := setup(t, open)
		first := map[string]*Record{
			"k1": newRecord("k1", "A", StatusLive, 0.9),
			"k2": newRecord("k2", "A", StatusNotLive, 0.2),
			"k3": newRecord("k3", "A", StatusNoFace, 0),
			"k4": newRecord("k4", "A", StatusLive, 0.7),
		}
		for _, r := range first {
			tb.write(t, r)
			require.Nil(t, r.Previous, "first result of %s", r.Key)
		}
		second := []*Record{
			newRecord("k1", "B", StatusNotLive, 0.3),
			newRecord("k2", "B", StatusLive, 0.8),
			newRecord("k3", "B", StatusNoFace, 0),
			newRecord("k4", "B", StatusLive, 0.65),
			newRecord("k5", "B", StatusFailed, 0),
		}
		for _, r := range second {
			out := tb.write(t, r)
			require.False(t, out.Redelivered, r.Key)
			got, err := tb.store.Get(tb.ctx, r.Key)
			require.NoError(t, err)
			var want *Previous
			if p, ok := first[r.Key]; ok {
				want = &Previous{Status: p.Status, Score: p.Score, VerifiedAt: p.VerifiedAt}
			}
			if d := cmp.Diff(want, got.Previous); d != "" {
				t.Errorf("previous of %s (-want +got):\n%s", r.Key, d)
			}
		}

		a, b := tb.summary(t, "A"), tb.summary(t, "B")
		require.Empty(t, a.Flips)
		if d := cmp.Diff(map[string]int64{"live>not_live": 1, "not_live>live": 1}, b.Flips); d != "" {
			t.Errorf("flips (-want +got):\n%s", d)
		}
		if d := cmp.Diff(map[Status]int64{StatusLive: 2, StatusNotLive: 1, StatusNoFace: 1, StatusFailed: 1}, b.Counts); d != "" {
			t.Errorf("counts (-want +got):\n%s", d)
		}
		var wantHist [HistogramBins]int64
		wantHist[6], wantHist[16], wantHist[13] = 1, 1, 1
		require.Equal(t, wantHist, b.Histogram)

		// A third batch compares with the second, not the first; read ahead of the write
		// (as the worker does, while it verifies), the previous result is the same.
		ahead, err := tb.store.Previous(tb.ctx, "k1", "C")
		require.NoError(t, err)
		third := newRecord("k1", "C", StatusLive, 0.95)
		_, err = tb.store.Write(tb.ctx, third, WithPrevious(ahead))
		require.NoError(t, err)
		require.Equal(t, StatusNotLive, third.Previous.Status)
		require.Equal(t, map[string]int64{"not_live>live": 1}, tb.summary(t, "C").Flips)
		again, err := tb.store.Previous(tb.ctx, "k1", "C")
		require.NoError(t, err)
		require.Equal(t, ahead, again, "a redelivery in batch C keeps the same previous")
	})
}

// TestWriteRedelivery: a task that runs twice in one batch is counted once.
func TestWriteRedelivery(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(*testing.T) *storage.Bucket) {
		tb := setup(t, open)
		earlier := newRecord("k", "A", StatusNotLive, 0.1)
		tb.write(t, earlier)

		first := newRecord("k", "B", StatusLive, 0.61)
		require.Equal(t, WriteOutcome{}, tb.write(t, first))
		wantPrev := &Previous{Status: StatusNotLive, Score: ptr(0.1), VerifiedAt: earlier.VerifiedAt}
		require.Equal(t, wantPrev, first.Previous)
		before := tb.summary(t, "B")

		again := newRecord("k", "B", StatusLive, 0.61)
		again.Attempts = 2
		out := tb.write(t, again)
		require.True(t, out.Redelivered)
		if d := cmp.Diff(wantPrev, again.Previous); d != "" {
			t.Errorf("previous of the redelivered result, not itself (-want +got):\n%s", d)
		}
		after := tb.summary(t, "B")
		require.Equal(t, map[Status]int64{StatusLive: 1}, after.Counts)
		require.Equal(t, before.Counts, after.Counts)
		require.Equal(t, before.Histogram, after.Histogram)
		require.Equal(t, map[string]int64{"not_live>live": 1}, after.Flips)
		require.Equal(t, int64(1), after.Done)
		n, err := tb.rdb.HLen(tb.ctx, BatchResultsKey("B")).Result()
		require.NoError(t, err)
		require.Equal(t, int64(1), n)

		got, err := tb.store.Get(tb.ctx, "k")
		require.NoError(t, err)
		require.Equal(t, 2, got.Attempts, "the redelivered result replaces the stored one")

		// A redelivery with another status moves the count, the bin and the flip.
		failed := newRecord("k", "B", StatusFailed, 0)
		out = tb.write(t, failed)
		require.True(t, out.Redelivered)
		require.Equal(t, wantPrev, failed.Previous)
		moved := tb.summary(t, "B")
		require.Equal(t, map[Status]int64{StatusFailed: 1}, moved.Counts)
		require.Equal(t, [HistogramBins]int64{}, moved.Histogram)
		require.Equal(t, map[string]int64{"not_live>failed": 1}, moved.Flips)
		hist, err := tb.rdb.HGetAll(tb.ctx, BatchHistKey("B")).Result()
		require.NoError(t, err)
		require.Empty(t, hist, "emptied bins are deleted")
		require.Equal(t, []byte(mustJSON(t, failed)), tb.storedJSON(t, "k"))

		// The redelivery is recognised from the latest result even once the batch's own
		// keys are gone (expired).
		require.NoError(t, tb.rdb.Del(tb.ctx, BatchResultsKey("B")).Err())
		late := newRecord("k", "B", StatusFailed, 0)
		tb.write(t, late)
		require.Equal(t, wantPrev, late.Previous)
	})
}

func mustJSON(t *testing.T, r *Record) string {
	t.Helper()
	b, err := MarshalRecord(r)
	require.NoError(t, err)
	return string(b)
}

// TestWriteConcurrent: many writers, some results delivered twice, counts add up. It
// runs on the local backend only: the counting is Redis's, and the S3 backend is
// exercised by the other Write tests.
// TestWriteConcurrent: many writers at once, on a plain client and on the asynchronous
// autopipeliner the worker uses (where each step's commands are submitted together),
// each write keeping a key of its own alongside (WithRedis) as the worker keeps verdicts.
func TestWriteConcurrent(t *testing.T) {
	for _, pipelined := range []bool{false, true} {
		t.Run(map[bool]string{false: "client", true: "async autopipeliner"}[pipelined], func(t *testing.T) {
			testWriteConcurrent(t, pipelined)
		})
	}
}

func testWriteConcurrent(t *testing.T, pipelined bool) {
	{
		tb := setup(t, openLocal)
		if pipelined {
			ap, err := tb.rdb.AsyncAutoPipeline()
			require.NoError(t, err)
			tb.store, err = New(Config{Redis: ap, Bucket: tb.bucket})
			require.NoError(t, err)
		}
		const (
			writers = 200
			records = 1000
			batch   = "concurrent"
		)
		statusOf := func(i int) (Status, float64) {
			switch i % 5 {
			case 0, 1:
				return StatusLive, 0.6 + float64(i%40)/100
			case 2:
				return StatusNotLive, float64(i%60) / 100
			case 3:
				return StatusNoFace, 0
			default:
				return StatusInvalidImage, 0
			}
		}
		// Half the keys have a result from an earlier batch, so flips are counted too.
		for i := 0; i < records; i += 2 {
			require.NoError(t, tb.writeRedis(tb.ctx, newRecord(fmt.Sprintf("k%04d", i), "earlier", StatusNoFace, 0)))
		}

		// Every record once, every 4th twice (a redelivery, maybe concurrent with the
		// first delivery), in an order that mixes them.
		var jobs []int
		for i := range records {
			jobs = append(jobs, i)
			if i%4 == 0 {
				jobs = append(jobs, i)
			}
		}
		rand.New(rand.NewPCG(1, 2)).Shuffle(len(jobs), func(i, j int) { jobs[i], jobs[j] = jobs[j], jobs[i] })

		work := make(chan int)
		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			firstErr  error
			redeliver int
		)
		for range writers {
			wg.Go(func() {
				for i := range work {
					st, score := statusOf(i)
					key := fmt.Sprintf("k%04d", i)
					prev, err := tb.store.Previous(tb.ctx, key, batch)
					var out WriteOutcome
					if err == nil {
						kept := "kept:" + key
						out, err = tb.store.Write(tb.ctx, newRecord(key, batch, st, score), WithPrevious(prev), WithRedis(
							func(pipe redis.Pipeliner) { pipe.Set(tb.ctx, kept, i, time.Hour) },
							func(pipe redis.Pipeliner) { pipe.Expire(tb.ctx, kept, time.Minute) }))
					}
					mu.Lock()
					if err != nil && firstErr == nil {
						firstErr = err
					}
					if out.Redelivered {
						redeliver++
					}
					mu.Unlock()
				}
			})
		}
		for _, i := range jobs {
			work <- i
		}
		close(work)
		wg.Wait()
		require.NoError(t, firstErr)
		require.Equal(t, len(jobs)-records, redeliver)

		wantCounts := map[Status]int64{}
		wantFlips := map[string]int64{}
		var wantHist [HistogramBins]int64
		for i := range records {
			st, score := statusOf(i)
			wantCounts[st]++
			if st.Scored() {
				wantHist[HistogramBin(score)]++
			}
			if i%2 == 0 && st != StatusNoFace {
				wantFlips[FlipName(StatusNoFace, st)]++
			}
		}
		sum := tb.summary(t, batch)
		if d := cmp.Diff(wantCounts, sum.Counts); d != "" {
			t.Errorf("counts (-want +got):\n%s", d)
		}
		require.Equal(t, wantHist, sum.Histogram)
		if d := cmp.Diff(wantFlips, sum.Flips); d != "" {
			t.Errorf("flips (-want +got):\n%s", d)
		}
		require.Equal(t, int64(records), sum.Done)
		n, err := tb.rdb.HLen(tb.ctx, BatchResultsKey(batch)).Result()
		require.NoError(t, err)
		require.Equal(t, int64(records), n)
		for i := range records {
			key := fmt.Sprintf("k%04d", i)
			v, err := tb.rdb.Get(tb.ctx, "kept:"+key).Int()
			require.NoError(t, err, key)
			require.Equal(t, i, v)
			ttl, err := tb.rdb.TTL(tb.ctx, "kept:"+key).Result()
			require.NoError(t, err)
			require.True(t, ttl > 0 && ttl <= time.Minute, "%s: TTL %v", key, ttl)
		}
	}
}

// TestHistogramEdges: the bins Redis counts agree with HistogramBin at the edges.
func TestHistogramEdges(t *testing.T) {
	tb := setup(t, openLocal)
	scores := []float64{0, 0.0499999, 0.05, 0.1, 0.15, 0.5999, 0.6, 0.65, 0.7, 0.95, 0.9999, 1.0}
	var want [HistogramBins]int64
	for i, s := range scores {
		st := StatusNotLive
		if s >= 0.6 {
			st = StatusLive
		}
		tb.write(t, newRecord(fmt.Sprintf("k%d", i), "h", st, s))
		want[HistogramBin(s)]++
	}
	require.Equal(t, [HistogramBins]int64{0: 2, 1: 1, 2: 1, 3: 1, 11: 1, 12: 1, 13: 1, 14: 1, 19: 3}, want)
	require.Equal(t, want, tb.summary(t, "h").Histogram)
}

// TestRetention: every batch key carries the retention TTL; latest results never expire.
func TestRetention(t *testing.T) {
	for _, tt := range []struct {
		desc      string
		retention time.Duration
		wantTTL   time.Duration // -1: no expiry
	}{
		{desc: "default", retention: 0, wantTTL: DefaultRetention},
		{desc: "one hour", retention: time.Hour, wantTTL: time.Hour},
		{desc: "forever", retention: -1, wantTTL: -1},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			tb := setup(t, openLocal, func(c *Config) { c.Retention = tt.retention })
			_, err := tb.store.CreateBatch(tb.ctx, BatchInfo{ID: "r", Threshold: 0.6})
			require.NoError(t, err)
			require.NoError(t, tb.store.AddEnqueued(tb.ctx, "r", 2, 0, 0))
			tb.write(t, newRecord("a", "earlier", StatusNotLive, 0.1))
			tb.write(t, newRecord("a", "r", StatusLive, 0.9)) // a flip
			tb.write(t, newRecord("b", "r", StatusNoFace, 0))
			_, err = tb.store.FinishEnqueue(tb.ctx, "r")
			require.NoError(t, err)

			for _, k := range []string{BatchMetaKey("r"), BatchCountsKey("r"), BatchHistKey("r"), BatchFlipsKey("r"), BatchResultsKey("r")} {
				ttl, err := tb.rdb.TTL(tb.ctx, k).Result()
				require.NoError(t, err)
				if tt.wantTTL < 0 {
					require.Equal(t, time.Duration(-1), ttl, "%s has no expiry", k)
				} else {
					require.Greater(t, ttl, tt.wantTTL-time.Minute, k)
					require.LessOrEqual(t, ttl, tt.wantTTL, k)
				}
			}
			ttl, err := tb.rdb.TTL(tb.ctx, ResultKey("a")).Result()
			require.NoError(t, err)
			require.Equal(t, time.Duration(-1), ttl, "latest result has no expiry")
		})
	}
}

// TestWriteStorageFailure: a failed storage write leaves Redis untouched, and the
// repeated write counts once.
func TestWriteStorageFailure(t *testing.T) {
	tb := setup(t, openLocal)
	root := filepath.Join(t.TempDir(), "gone")
	gone, err := storage.NewLocal(storage.LocalConfig{Root: root, Create: true})
	require.NoError(t, err)
	t.Cleanup(func() { gone.Close() })
	require.NoError(t, os.RemoveAll(root)) // every Put now fails
	broken, err := New(Config{Redis: tb.rdb, Bucket: gone})
	require.NoError(t, err)

	// The caller's commands: before lands ahead of the storage write, after only once
	// storage has the result.
	also := WithRedis(
		func(pipe redis.Pipeliner) { pipe.Set(tb.ctx, "test:before", "1", time.Minute) },
		func(pipe redis.Pipeliner) { pipe.Set(tb.ctx, "test:after", "1", time.Minute) })
	_, err = broken.Write(tb.ctx, newRecord("dir/k", "A", StatusLive, 0.9), also)
	require.Error(t, err)
	keys, err := tb.rdb.Keys(tb.ctx, "*").Result()
	require.NoError(t, err)
	require.Equal(t, []string{"test:before"}, keys, "no result written to Redis, the caller's before command was")

	_, err = tb.store.Write(tb.ctx, newRecord("dir/k2", "A", StatusLive, 0.9), also)
	require.NoError(t, err)
	require.Equal(t, int64(1), tb.rdb.Exists(tb.ctx, "test:after").Val())
	require.NoError(t, tb.rdb.Del(tb.ctx, "test:before", "test:after").Err())
	require.NoError(t, tb.rdb.Del(tb.ctx, ResultKey("dir/k2"), BatchResultsKey("A"), BatchCountsKey("A"), BatchHistKey("A"), BatchFlipsKey("A"), BatchMetaKey("A")).Err())

	require.Equal(t, WriteOutcome{}, tb.write(t, newRecord("dir/k", "A", StatusLive, 0.9)))
	require.Equal(t, map[Status]int64{StatusLive: 1}, tb.summary(t, "A").Counts)
	require.True(t, bytes.Contains(tb.storedJSON(t, "dir/k"), []byte(`"status":"live"`)))
}
