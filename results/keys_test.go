package results

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// hashTag returns the part of key Redis Cluster hashes to pick a slot: the text between
// the first '{' and the next '}', when not empty; else the whole key.
func hashTag(key string) string {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return key
	}
	j := strings.IndexByte(key[i+1:], '}')
	if j <= 0 {
		return key
	}
	return key[i+1 : i+1+j]
}

func TestNames(t *testing.T) {
	t.Parallel()
	const id = "20261127T121500Z-ab12cd"
	tests := []struct {
		desc string
		got  string
		want string
	}{
		{desc: "latest result", got: ResultKey("selfies/a.jpg"), want: "livenessq:result:{selfies/a.jpg}"},
		{desc: "index", got: BatchIndexKey, want: "livenessq:{batches}"},
		{desc: "meta", got: BatchMetaKey(id), want: "livenessq:{batch:" + id + "}:meta"},
		{desc: "counts", got: BatchCountsKey(id), want: "livenessq:{batch:" + id + "}:counts"},
		{desc: "hist", got: BatchHistKey(id), want: "livenessq:{batch:" + id + "}:hist"},
		{desc: "flips", got: BatchFlipsKey(id), want: "livenessq:{batch:" + id + "}:flips"},
		{desc: "results", got: BatchResultsKey(id), want: "livenessq:{batch:" + id + "}:results"},
		{desc: "flip", got: FlipName(StatusLive, StatusNotLive), want: "live>not_live"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, tt.got, tt.desc)
	}
}

// TestBatchKeysShareASlot: every key a batch script touches hashes to the batch's tag.
func TestBatchKeysShareASlot(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"b", NewBatchID(), "nightly:2026-11-27.v2_x"} {
		for _, k := range []string{BatchMetaKey(id), BatchCountsKey(id), BatchHistKey(id), BatchFlipsKey(id), BatchResultsKey(id)} {
			require.True(t, strings.HasPrefix(k, KeyPrefix), k)
			require.Equal(t, "batch:"+id, hashTag(k), k)
		}
	}
	require.Equal(t, "batches", hashTag(BatchIndexKey))
}

func TestValidateBatchID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		id   string
		ok   bool
	}{
		{desc: "generated", id: NewBatchID(), ok: true},
		{desc: "punctuation", id: "nightly:2026-11-27.v2_x", ok: true},
		{desc: "longest", id: strings.Repeat("a", 128), ok: true},
		{desc: "empty", id: ""},
		{desc: "too long", id: strings.Repeat("a", 129)},
		{desc: "closing brace", id: "a}b"},
		{desc: "opening brace", id: "a{b"},
		{desc: "space", id: "a b"},
		{desc: "slash", id: "a/b"},
		{desc: "non-ASCII", id: "é"},
	}
	for _, tt := range tests {
		err := ValidateBatchID(tt.id)
		if tt.ok {
			require.NoError(t, err, tt.desc)
		} else {
			require.ErrorIs(t, err, ErrInvalidBatchID, tt.desc)
		}
	}
}

func TestNewBatchID(t *testing.T) {
	t.Parallel()
	re := regexp.MustCompile(`^\d{8}T\d{6}Z-[0-9a-f]{6}$`)
	seen := map[string]bool{}
	for range 100 {
		id := NewBatchID()
		require.Regexp(t, re, id)
		require.NoError(t, ValidateBatchID(id))
		require.False(t, seen[id], "duplicate %s", id)
		seen[id] = true
	}
	t0 := time.Date(2026, 11, 27, 12, 15, 0, 0, time.FixedZone("X", 3600))
	a, b := newBatchID(t0), newBatchID(t0.Add(time.Second))
	require.True(t, strings.HasPrefix(a, "20261127T111500Z-"), a)
	require.Less(t, a, b)
}
