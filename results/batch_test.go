package results

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
)

func TestCreateBatch(t *testing.T) {
	tb := setup(t, openLocal)
	created := time.Date(2026, 11, 27, 12, 15, 0, 0, time.UTC)
	info := BatchInfo{ID: "b1", Source: "prefix selfies/", Storage: "s3://selfies", Threshold: 0.7,
		CreatedAt: created, CallbackURL: "https://example.test/done"}
	ok, err := tb.store.CreateBatch(tb.ctx, info)
	require.NoError(t, err)
	require.True(t, ok)

	again := info
	again.Source, again.Threshold = "something else", 0.1
	ok, err = tb.store.CreateBatch(tb.ctx, again)
	require.NoError(t, err)
	require.False(t, ok, "an existing batch is not created again")

	sum := tb.summary(t, "b1")
	if d := cmp.Diff(info, sum.Info); d != "" {
		t.Errorf("info (-want +got):\n%s", d)
	}
	require.Empty(t, sum.Counts)
	require.False(t, sum.Complete)
	require.Zero(t, sum.Progress)
	require.WithinDuration(t, time.Now(), sum.UpdatedAt, time.Minute)

	_, err = tb.store.CreateBatch(tb.ctx, BatchInfo{ID: "bad id"})
	require.ErrorIs(t, err, ErrInvalidBatchID)
	_, err = tb.store.Batch(tb.ctx, "never")
	require.ErrorIs(t, err, ErrBatchNotFound)
}

// TestBatchComplete: a batch is complete once enqueueing is done and every task has a
// result; exactly one call reports the moment it became complete.
func TestBatchComplete(t *testing.T) {
	t.Run("last result completes", func(t *testing.T) {
		tb := setup(t, openLocal)
		_, err := tb.store.CreateBatch(tb.ctx, BatchInfo{ID: "b", Threshold: 0.6})
		require.NoError(t, err)
		require.NoError(t, tb.store.AddEnqueued(tb.ctx, "b", 2, 1, 0))
		require.NoError(t, tb.store.AddEnqueued(tb.ctx, "b", 1, 0, 2))

		require.False(t, tb.write(t, newRecord("k1", "b", StatusLive, 0.9)).Completed)
		require.False(t, tb.write(t, newRecord("k2", "b", StatusNoFace, 0)).Completed)
		sum := tb.summary(t, "b")
		require.Equal(t, int64(3), sum.Enqueued)
		require.Equal(t, int64(1), sum.Duplicates)
		require.Equal(t, int64(2), sum.Malformed)
		require.Equal(t, int64(2), sum.Done)
		require.False(t, sum.EnqueueDone)
		require.False(t, sum.Complete)
		require.InDelta(t, 2.0/3, sum.Progress, 1e-9)

		done, err := tb.store.FinishEnqueue(tb.ctx, "b")
		require.NoError(t, err)
		require.False(t, done, "a result is missing")
		sum = tb.summary(t, "b")
		require.True(t, sum.EnqueueDone)
		require.False(t, sum.Complete)

		require.False(t, tb.write(t, newRecord("k1", "b", StatusLive, 0.9)).Completed, "a redelivery completes nothing")
		out := tb.write(t, newRecord("k3", "b", StatusNotFound, 0))
		require.Equal(t, WriteOutcome{Completed: true}, out)
		sum = tb.summary(t, "b")
		require.True(t, sum.Complete)
		require.Equal(t, 1.0, sum.Progress)

		require.False(t, tb.write(t, newRecord("k3", "b", StatusNotFound, 0)).Completed)
		done, err = tb.store.FinishEnqueue(tb.ctx, "b")
		require.NoError(t, err)
		require.False(t, done, "finishing twice")
	})
	t.Run("results before enqueue finishes", func(t *testing.T) {
		tb := setup(t, openLocal)
		_, err := tb.store.CreateBatch(tb.ctx, BatchInfo{ID: "b"})
		require.NoError(t, err)
		require.NoError(t, tb.store.AddEnqueued(tb.ctx, "b", 2, 0, 0))
		require.False(t, tb.write(t, newRecord("k1", "b", StatusLive, 0.9)).Completed)
		require.False(t, tb.write(t, newRecord("k2", "b", StatusLive, 0.9)).Completed)
		require.False(t, tb.summary(t, "b").Complete)
		done, err := tb.store.FinishEnqueue(tb.ctx, "b")
		require.NoError(t, err)
		require.True(t, done)
		require.True(t, tb.summary(t, "b").Complete)
	})
	t.Run("empty batch", func(t *testing.T) {
		tb := setup(t, openLocal)
		_, err := tb.store.CreateBatch(tb.ctx, BatchInfo{ID: "b"})
		require.NoError(t, err)
		done, err := tb.store.FinishEnqueue(tb.ctx, "b")
		require.NoError(t, err)
		require.True(t, done)
		sum := tb.summary(t, "b")
		require.True(t, sum.Complete)
		require.Equal(t, 1.0, sum.Progress)
	})
}

func TestBatchFields(t *testing.T) {
	tb := setup(t, openLocal)
	_, err := tb.store.CreateBatch(tb.ctx, BatchInfo{ID: "b", CallbackURL: "https://example.test/cb"})
	require.NoError(t, err)

	won, err := tb.store.SetBatchFieldNX(tb.ctx, "b", "callback_claim", "worker-1")
	require.NoError(t, err)
	require.True(t, won)
	won, err = tb.store.SetBatchFieldNX(tb.ctx, "b", "callback_claim", "worker-2")
	require.NoError(t, err)
	require.False(t, won)

	require.NoError(t, tb.store.SetBatchField(tb.ctx, "b", FieldCallbackState, "retrying"))
	n, err := tb.store.IncrBatchField(tb.ctx, "b", FieldCallbackAttempts, 1)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	n, err = tb.store.IncrBatchField(tb.ctx, "b", FieldCallbackAttempts, 1)
	require.NoError(t, err)
	require.Equal(t, int64(2), n)

	info := tb.summary(t, "b").Info
	require.Equal(t, "retrying", info.CallbackState)
	require.Equal(t, int64(2), info.CallbackAttempts)
	require.Equal(t, map[string]string{"callback_claim": "worker-1"}, info.Extra)
}

func TestBatches(t *testing.T) {
	tb := setup(t, openLocal)
	t0 := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	var ids []string
	for i := range 5 {
		id := fmt.Sprintf("b%d", i)
		ids = append(ids, id)
		_, err := tb.store.CreateBatch(tb.ctx, BatchInfo{ID: id, CreatedAt: t0.Add(time.Duration(i) * time.Hour)})
		require.NoError(t, err)
	}
	tb.write(t, newRecord("k", "b3", StatusLive, 0.9))

	idsOf := func(sums []BatchSummary) []string {
		var out []string
		for _, s := range sums {
			out = append(out, s.Info.ID)
		}
		return out
	}
	all, err := tb.store.Batches(tb.ctx, 0)
	require.NoError(t, err)
	require.Equal(t, []string{"b4", "b3", "b2", "b1", "b0"}, idsOf(all))
	require.Equal(t, int64(1), all[1].Counts[StatusLive])

	// An expired batch is skipped and dropped from the index.
	require.NoError(t, tb.rdb.Del(tb.ctx, BatchMetaKey("b4"), BatchMetaKey("b2")).Err())
	two, err := tb.store.Batches(tb.ctx, 2)
	require.NoError(t, err)
	require.Equal(t, []string{"b3", "b1"}, idsOf(two))
	left, err := tb.rdb.ZRange(tb.ctx, BatchIndexKey, 0, -1).Result()
	require.NoError(t, err)
	require.Equal(t, []string{"b0", "b1", "b3"}, left)
}

// TestBatchesPaging: more batches than one index page.
func TestBatchesPaging(t *testing.T) {
	tb := setup(t, openLocal)
	t0 := time.Now().Add(-time.Hour)
	for i := range 130 {
		_, err := tb.store.CreateBatch(tb.ctx, BatchInfo{ID: fmt.Sprintf("b%03d", i), CreatedAt: t0.Add(time.Duration(i) * time.Second)})
		require.NoError(t, err)
	}
	all, err := tb.store.Batches(tb.ctx, -1)
	require.NoError(t, err)
	require.Len(t, all, 130)
	require.Equal(t, "b129", all[0].Info.ID)
	require.Equal(t, "b000", all[129].Info.ID)
	some, err := tb.store.Batches(tb.ctx, 101)
	require.NoError(t, err)
	require.Len(t, some, 101)
	require.Equal(t, "b029", some[100].Info.ID)
}
