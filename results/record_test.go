package results

import (
	"encoding/json"
	"errors"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
)

func ptr[T any](v T) *T { return &v }

// fullRecord returns a record with every field set.
func fullRecord() *Record {
	return &Record{
		Key:           "selfies/2026/a.jpg",
		Bucket:        "selfies",
		ETag:          "9b2cf535f27731c974343645a3985328",
		BatchID:       "20261127T121500Z-ab12cd",
		Status:        StatusLive,
		Score:         ptr(0.9312),
		Threshold:     0.6,
		Live:          ptr(true),
		Faces:         1,
		Image:         &Image{Format: "jpeg", Width: 1080, Height: 1350, Bytes: 412345},
		LowResolution: false,
		Kairos: &Kairos{
			APIReqUID:    "c6bb825f-871c-4323-8c06-8e5fd3517747",
			RequestID:    "req-1",
			ResponseCode: 2,
			RequestedAt:  time.Date(2026, 11, 27, 12, 15, 0, 0, time.UTC),
			ProcessedAt:  time.Date(2026, 11, 27, 12, 15, 1, 0, time.UTC),
		},
		Attempts:   1,
		VerifiedAt: time.Date(2026, 11, 27, 12, 15, 1, 500_000_000, time.UTC),
		Previous:   &Previous{Status: StatusNotLive, Score: ptr(0.41), VerifiedAt: time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)},
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	require.Len(t, Statuses, 8)
	seen := map[Status]bool{}
	for _, s := range Statuses {
		require.True(t, s.Valid(), s)
		require.False(t, seen[s], "duplicate %s", s)
		seen[s] = true
		got, err := ParseStatus(string(s))
		require.NoError(t, err)
		require.Equal(t, s, got)
		require.Equal(t, s == StatusLive || s == StatusNotLive, s.Scored(), s)
	}
	want := []string{"live", "not_live", "no_face", "invalid_image", "rejected", "not_found", "failed", "bad_task"}
	got := make([]string, len(Statuses))
	for i, s := range Statuses {
		got[i] = s.String()
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Statuses (-want +got):\n%s", d)
	}
	_, err := ParseStatus("LIVE")
	require.ErrorIs(t, err, ErrInvalidRecord)
	require.False(t, Status("").Valid())
}

func TestHistogramBin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc  string
		score float64
		want  int
	}{
		{desc: "zero", score: 0, want: 0},
		{desc: "just under the first edge", score: 0.0499, want: 0},
		{desc: "first edge", score: 0.05, want: 1},
		{desc: "default threshold", score: 0.6, want: 12},
		{desc: "just under the threshold", score: 0.5999, want: 11},
		{desc: "last bin", score: 0.95, want: 19},
		{desc: "one", score: 1.0, want: 19},
		{desc: "above one", score: 1.7, want: 19},
		{desc: "negative", score: -0.2, want: 0},
		{desc: "NaN", score: math.NaN(), want: 0},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, HistogramBin(tt.score), tt.desc)
	}
}

// TestRecordJSONContract pins the field names of DESIGN.md's result record.
func TestRecordJSONContract(t *testing.T) {
	t.Parallel()
	b, err := MarshalRecord(fullRecord())
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	keys := func(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

	want := []string{"attempts", "batch_id", "bucket", "etag", "faces", "image", "kairos", "key",
		"live", "low_resolution", "previous", "score", "status", "threshold", "verified_at"}
	if d := cmp.Diff(want, keys(m)); d != "" {
		t.Errorf("record fields (-want +got):\n%s", d)
	}
	// reason is present only when set: a scored record has none.
	if d := cmp.Diff([]string{"bytes", "format", "height", "width"}, keys(m["image"].(map[string]any))); d != "" {
		t.Errorf("image fields (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"api_req_uid", "processed_at", "request_id", "requested_at", "response_code"}, keys(m["kairos"].(map[string]any))); d != "" {
		t.Errorf("kairos fields (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"score", "status", "verified_at"}, keys(m["previous"].(map[string]any))); d != "" {
		t.Errorf("previous fields (-want +got):\n%s", d)
	}
	require.Equal(t, "2026-11-27T12:15:01.5Z", m["verified_at"])
	require.Equal(t, "2026-11-27T12:15:00Z", m["kairos"].(map[string]any)["requested_at"])

	got, err := UnmarshalRecord(b)
	require.NoError(t, err)
	if d := cmp.Diff(fullRecord(), got); d != "" {
		t.Errorf("round trip (-want +got):\n%s", d)
	}
}

func TestRecordJSONUnscored(t *testing.T) {
	t.Parallel()
	r := &Record{Key: "a.jpg", Bucket: "b", BatchID: "x", Status: StatusInvalidImage, Threshold: 0.6,
		Reason: "width 299 px is under 300 px", Attempts: 1, VerifiedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	b, err := MarshalRecord(r)
	require.NoError(t, err)
	require.Equal(t, `{"key":"a.jpg","bucket":"b","batch_id":"x","status":"invalid_image","threshold":0.6,"faces":0,`+
		`"low_resolution":false,"reason":"width 299 px is under 300 px","attempts":1,"verified_at":"2026-01-02T03:04:05Z"}`, string(b))
}

func TestRecordValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc    string
		edit    func(r *Record)
		wantErr error
	}{
		{desc: "full record", edit: func(*Record) {}},
		{desc: "no batch", edit: func(r *Record) { r.BatchID = "" }},
		{desc: "unscored without score", edit: func(r *Record) { r.Status, r.Score, r.Live = StatusNotFound, nil, nil }},
		{desc: "empty key", edit: func(r *Record) { r.Key = "" }, wantErr: ErrInvalidRecord},
		{desc: "unknown status", edit: func(r *Record) { r.Status = "maybe" }, wantErr: ErrInvalidRecord},
		{desc: "scored without score", edit: func(r *Record) { r.Score = nil }, wantErr: ErrInvalidRecord},
		{desc: "batch id with a brace", edit: func(r *Record) { r.BatchID = "a}b" }, wantErr: ErrInvalidBatchID},
	}
	for _, tt := range tests {
		r := fullRecord()
		tt.edit(r)
		err := r.Validate()
		if tt.wantErr == nil {
			require.NoError(t, err, tt.desc)
			continue
		}
		require.ErrorIs(t, err, tt.wantErr, tt.desc)
		require.True(t, errors.Is(err, ErrInvalidRecord), tt.desc)
	}
}

func TestRecordNormalize(t *testing.T) {
	t.Parallel()
	paris := time.FixedZone("CET", 3600)
	r := fullRecord()
	r.VerifiedAt = time.Date(2026, 11, 27, 13, 0, 0, 0, paris)
	r.Kairos.ProcessedAt = time.Date(2026, 11, 27, 13, 0, 0, 0, paris)
	r.normalize()
	b, err := MarshalRecord(r)
	require.NoError(t, err)
	require.Contains(t, string(b), `"verified_at":"2026-11-27T12:00:00Z"`)
	require.Contains(t, string(b), `"processed_at":"2026-11-27T12:00:00Z"`)
	require.False(t, strings.Contains(string(b), "+01:00"))
}

func BenchmarkRecordJSON(b *testing.B) {
	r := fullRecord()
	data, err := MarshalRecord(r)
	require.NoError(b, err)
	b.Run("marshal", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := MarshalRecord(r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := UnmarshalRecord(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
