package enqueue

import (
	"encoding/json"
	"errors"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
)

func ptr[T any](v T) *T { return &v }

const testStorage = "s3://selfies?endpoint=http://127.0.0.1:9000&region=us-east-1"

func validPayload() Payload {
	return Payload{
		Storage:    testStorage,
		Key:        "users/42/selfie.jpg",
		Threshold:  ptr(0.7),
		BatchID:    "b-1",
		EnqueuedAt: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
	}
}

func TestValidateThreshold(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		in   float64
		want string // "" = valid
	}{
		{desc: "zero", in: 0},
		{desc: "one", in: 1},
		{desc: "middle", in: 0.6},
		{desc: "negative", in: -1, want: "threshold must be a number in [0, 1], got -1"},
		{desc: "above one", in: 2, want: "threshold must be a number in [0, 1], got 2"},
		{desc: "NaN", in: math.NaN(), want: "threshold must be a number in [0, 1], got NaN"},
		{desc: "infinity", in: math.Inf(1), want: "threshold must be a number in [0, 1], got +Inf"},
		{desc: "just above one", in: 1.0000001, want: "threshold must be a number in [0, 1], got 1.0000001"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			err := ValidateThreshold(tt.in)
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrBadThreshold)
			require.Equal(t, tt.want, err.Error())
		})
	}
}

func TestNewVerifyTask(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc   string
		modify func(*Payload)
		want   error // nil = valid
	}{
		{desc: "valid", modify: func(*Payload) {}},
		{desc: "no threshold", modify: func(p *Payload) { p.Threshold = nil }},
		{desc: "threshold zero", modify: func(p *Payload) { p.Threshold = ptr(0.0) }},
		{desc: "key with spaces and unicode", modify: func(p *Payload) { p.Key = "a b/ünïcødé 😀.jpg" }},
		{desc: "key of 1024 bytes", modify: func(p *Payload) { p.Key = strings.Repeat("k", 1024) }},
		{desc: "empty key", modify: func(p *Payload) { p.Key = "" }, want: ErrBadKey},
		{desc: "key of 1025 bytes", modify: func(p *Payload) { p.Key = strings.Repeat("k", 1025) }, want: ErrBadKey},
		{desc: "key not UTF-8", modify: func(p *Payload) { p.Key = "a\xffb" }, want: ErrBadKey},
		{desc: "key with NUL", modify: func(p *Payload) { p.Key = "a\x00b" }, want: ErrBadKey},
		{desc: "threshold -1", modify: func(p *Payload) { p.Threshold = ptr(-1.0) }, want: ErrBadThreshold},
		{desc: "threshold 2", modify: func(p *Payload) { p.Threshold = ptr(2.0) }, want: ErrBadThreshold},
		{desc: "threshold NaN", modify: func(p *Payload) { p.Threshold = ptr(math.NaN()) }, want: ErrBadThreshold},
		{desc: "empty batch", modify: func(p *Payload) { p.BatchID = "" }, want: ErrBadBatch},
		{desc: "batch with brace", modify: func(p *Payload) { p.BatchID = "a{b}" }, want: ErrBadBatch},
		{desc: "empty storage", modify: func(p *Payload) { p.Storage = "" }, want: ErrBadBatch},
		{desc: "storage with credentials", modify: func(p *Payload) { p.Storage = "s3://user:pw@bucket" }, want: ErrBadBatch},
		{desc: "unknown version", modify: func(p *Payload) { p.V = 2 }, want: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			p := validPayload()
			tt.modify(&p)
			task, err := NewVerifyTask(p)
			if tt.want != nil {
				require.Error(t, err)
				if tt.want != errAny {
					require.ErrorIs(t, err, tt.want)
				}
				require.Nil(t, task)
				return
			}
			require.NoError(t, err)
			require.Equal(t, TaskType, task.Type())
			got, err := ParsePayload(task.Payload())
			require.NoError(t, err)
			p.V = PayloadVersion
			if diff := cmp.Diff(p, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

// errAny marks a test case that wants some error, whichever.
var errAny = errors.New("any error")

func TestNewVerifyTaskDefaults(t *testing.T) {
	t.Parallel()
	before := time.Now()
	task, err := NewVerifyTask(Payload{Storage: testStorage, Key: "k", BatchID: "b"})
	require.NoError(t, err)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(task.Payload(), &raw))
	require.Equal(t, float64(PayloadVersion), raw["v"])
	require.NotContains(t, raw, "threshold", "a nil threshold is omitted")
	p, err := ParsePayload(task.Payload())
	require.NoError(t, err)
	require.False(t, p.EnqueuedAt.Before(before.Add(-time.Second)), "EnqueuedAt %v is set to now", p.EnqueuedAt)
	require.Equal(t, time.UTC, p.EnqueuedAt.Location())
}

func TestParsePayload(t *testing.T) {
	t.Parallel()
	const ok = `"storage":"file:///data","key":"k.jpg","batch_id":"b1","enqueued_at":"2026-01-02T03:04:05Z"`
	tests := []struct {
		desc string
		in   string
		want error // nil = valid
	}{
		{desc: "valid", in: `{"v":1,` + ok + `}`},
		{desc: "valid with threshold", in: `{"v":1,"threshold":0.5,` + ok + `}`},
		{desc: "null threshold", in: `{"v":1,"threshold":null,` + ok + `}`},
		{desc: "unknown field ignored", in: `{"v":1,"future":[1,2],` + ok + `}`},
		{desc: "not JSON", in: `not json`, want: ErrBadPayload},
		{desc: "empty", in: ``, want: ErrBadPayload},
		{desc: "null", in: `null`, want: ErrBadPayload},
		{desc: "array", in: `[1]`, want: ErrBadPayload},
		{desc: "trailing garbage", in: `{"v":1,` + ok + `}x`, want: ErrBadPayload},
		{desc: "no version", in: `{` + ok + `}`, want: ErrBadPayload},
		{desc: "unknown version", in: `{"v":2,` + ok + `}`, want: ErrBadPayload},
		{desc: "missing key", in: `{"v":1,"storage":"file:///d","batch_id":"b"}`, want: ErrBadKey},
		{desc: "key not a string", in: `{"v":1,"storage":"file:///d","batch_id":"b","key":7}`, want: ErrBadPayload},
		{desc: "threshold 2", in: `{"v":1,"threshold":2,` + ok + `}`, want: ErrBadThreshold},
		{desc: "threshold -1", in: `{"v":1,"threshold":-1,` + ok + `}`, want: ErrBadThreshold},
		{desc: "threshold a string", in: `{"v":1,"threshold":"0.5",` + ok + `}`, want: ErrBadPayload},
		{desc: "missing batch", in: `{"v":1,"storage":"file:///d","key":"k"}`, want: ErrBadBatch},
		{desc: "missing storage", in: `{"v":1,"batch_id":"b","key":"k"}`, want: ErrBadBatch},
		{desc: "bad time", in: `{"v":1,` + ok + `,"enqueued_at":"yesterday"}`, want: ErrBadPayload},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			p, err := ParsePayload([]byte(tt.in))
			if tt.want == nil {
				require.NoError(t, err)
				require.Equal(t, "k.jpg", p.Key)
				return
			}
			require.ErrorIs(t, err, ErrBadPayload, "every error wraps ErrBadPayload")
			require.ErrorIs(t, err, tt.want)
			require.Equal(t, Payload{}, p)
		})
	}
}

func TestTaskID(t *testing.T) {
	t.Parallel()
	id := TaskID("b1", testStorage, "a.jpg")
	require.Regexp(t, regexp.MustCompile(`^lq-[0-9a-f]{32}$`), id)
	require.Equal(t, id, TaskID("b1", testStorage, "a.jpg"), "deterministic")
	others := []string{
		TaskID("b2", testStorage, "a.jpg"),
		TaskID("b1", "file:///other", "a.jpg"),
		TaskID("b1", testStorage, "b.jpg"),
		// The NUL separators keep the fields apart.
		TaskID("b", "1"+testStorage, "a.jpg"),
		TaskID("b1", testStorage+"a", ".jpg"),
	}
	seen := map[string]bool{id: true}
	for _, o := range others {
		require.False(t, seen[o], "TaskID collision: %s", o)
		seen[o] = true
	}
}

func FuzzParsePayload(f *testing.F) {
	f.Add([]byte(`{"v":1,"storage":"file:///data","key":"k.jpg","batch_id":"b1","enqueued_at":"2026-01-02T03:04:05Z"}`))
	f.Add([]byte(`{"v":1,"storage":"s3://b","key":"a b/ü.jpg","threshold":0.25,"batch_id":"b-2","enqueued_at":"2026-01-02T03:04:05.123456789+02:00"}`))
	f.Add([]byte(`{"v":2}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePayload(b)
		if err != nil {
			if !errors.Is(err, ErrBadPayload) {
				t.Fatalf("error %v does not wrap ErrBadPayload", err)
			}
			return
		}
		// Whatever ParsePayload accepts, NewVerifyTask writes and ParsePayload reads back.
		task, err := NewVerifyTask(p)
		if err != nil {
			t.Fatalf("NewVerifyTask(%+v) of a parsed payload: %v", p, err)
		}
		again, err := ParsePayload(task.Payload())
		if err != nil {
			t.Fatalf("ParsePayload(%s) of a written payload: %v", task.Payload(), err)
		}
		if !p.EnqueuedAt.IsZero() && !again.EnqueuedAt.Equal(p.EnqueuedAt) { // zero: set to now
			t.Fatalf("EnqueuedAt %v, want %v", again.EnqueuedAt, p.EnqueuedAt)
		}
		again.EnqueuedAt, p.EnqueuedAt = time.Time{}, time.Time{}
		if diff := cmp.Diff(p, again); diff != "" {
			t.Fatalf("round trip (-want +got):\n%s", diff)
		}
	})
}
