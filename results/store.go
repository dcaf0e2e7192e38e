package results

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/livenessq/livenessq/storage"
)

// DefaultRetention is how long a batch's keys live after its last activity when
// Config.Retention is 0.
const DefaultRetention = 30 * 24 * time.Hour

// maxRecordBytes caps the size of a result JSON read back from storage.
const maxRecordBytes = 1 << 20

// Config configures a Store.
type Config struct {
	// Redis holds the latest result of every key and the batches. Required. A Cluster
	// client works: every multi-key script touches one slot. An autopipeliner must be
	// the asynchronous face (AsyncAutoPipeline): the store submits each step's commands
	// on it together, to share one batch.
	Redis redis.UniversalClient
	// Bucket is where result JSON is written, as <key>.json. Required.
	Bucket *storage.Bucket
	// Logger receives debug events (redeliveries, storage fallbacks). Default: the zero
	// Logger, which writes nothing.
	Logger zerolog.Logger
	// Retention is how long a batch's keys (meta, counters, histogram, flips, results)
	// live after the batch's last write. 0 means DefaultRetention (30 days); a negative
	// value keeps them forever. The latest result of each key has no expiry.
	Retention time.Duration
}

// Store writes and reads results and batch statistics: result JSON in storage, the
// latest result of each key and every batch's counters in Redis. It is safe for
// concurrent use by many goroutines and many processes.
type Store struct {
	rdb       redis.UniversalClient
	ap        *redis.AutoPipeliner // rdb, when it is one (see send)
	bucket    *storage.Bucket
	log       zerolog.Logger
	retention time.Duration // <= 0: forever
}

// New returns a Store, or an error naming the missing or bad Config field. The Store
// uses cfg.Redis and cfg.Bucket without owning them: closing them is the caller's job.
func New(cfg Config) (*Store, error) {
	if cfg.Redis == nil {
		return nil, errors.New("results: Config.Redis is required")
	}
	if cfg.Bucket == nil {
		return nil, errors.New("results: Config.Bucket is required")
	}
	switch {
	case cfg.Retention == 0:
		cfg.Retention = DefaultRetention
	case cfg.Retention > 0 && cfg.Retention < time.Second:
		return nil, fmt.Errorf("results: Config.Retention %v is under one second", cfg.Retention)
	}
	ap, _ := cfg.Redis.(*redis.AutoPipeliner)
	return &Store{rdb: cfg.Redis, ap: ap, bucket: cfg.Bucket, log: cfg.Logger, retention: cfg.Retention}, nil
}

// ttlSeconds is the batch keys' TTL as a script argument; 0 means no expiry.
func (s *Store) ttlSeconds() int64 {
	if s.retention <= 0 {
		return 0
	}
	return int64(s.retention / time.Second)
}

// WriteOutcome says what a Write did to its batch's statistics.
type WriteOutcome struct {
	// Redelivered is true when the batch already held a result for this key (a task run
	// again after a crash, or a key listed twice in one batch): the stored result was
	// replaced and its counts moved, never added twice.
	Redelivered bool
	// Completed is true when this write made the batch complete: enqueueing had finished
	// and this was the last result missing. At most one write of a batch sees it (one
	// more can, should a later enqueue add tasks to a finished batch), so callers that
	// deliver a completion callback should still claim it with SetBatchFieldNX.
	Completed bool
}

// writeScript records one result in its batch, atomically, on the batch's slot.
//
// KEYS: results, counts, hist, flips, meta. ARGV: key, record JSON, TTL seconds (0: none),
// updated_at, batch id. Returns {1 if new else 0, 1 if this write completed the batch}.
//
// The accounting of a record (its status count, its histogram bin when scored, its flip
// against its previous status) is computed here from the JSON, both for the new record
// and for the one it replaces, so that a replacement moves exactly what was added.
var writeScript = redis.NewScript(luaAccount + `
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if old then account(cjson.decode(old), -1) end
account(cjson.decode(ARGV[2]), 1)
redis.call('HSET', KEYS[5], 'updated_at', ARGV[4])
redis.call('HSETNX', KEYS[5], 'id', ARGV[5])
local completed = 0
if not old and redis.call('HGET', KEYS[5], 'enqueue_done') == '1' then
  local enq = tonumber(redis.call('HGET', KEYS[5], 'enqueued') or '0') or 0
  local done = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[2])) do done = done + tonumber(v) end
  if done >= enq and done - 1 < enq then completed = 1 end
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  for i = 1, 5 do redis.call('EXPIRE', KEYS[i], ttl) end
end
if old then return {0, completed} end
return {1, completed}
`)

// luaAccount defines account(rec, delta): add delta to rec's status count, to its
// histogram bin if its status is scored, and to its flip if its previous status differs.
// A field brought to 0 is deleted, so the hashes hold only what the results say.
var luaAccount = func() string {
	var scored strings.Builder
	for _, st := range Statuses {
		if st.Scored() {
			fmt.Fprintf(&scored, "[%q]=true,", string(st))
		}
	}
	return `
local scored = {` + scored.String() + `}
local function bump(key, field, delta)
  if redis.call('HINCRBY', key, field, delta) == 0 then redis.call('HDEL', key, field) end
end
local function account(rec, delta)
  local st = rec['status']
  if type(st) ~= 'string' or st == '' then return end
  bump(KEYS[2], st, delta)
  local score = rec['score']
  if scored[st] and type(score) == 'number' then
    local bin = 0
    if score > 0 then bin = math.floor(score * ` + strconv.Itoa(HistogramBins) + `) end
    if bin > ` + strconv.Itoa(HistogramBins-1) + ` then bin = ` + strconv.Itoa(HistogramBins-1) + ` end
    bump(KEYS[3], string.format('%d', bin), delta)
  end
  local prev = rec['previous']
  if type(prev) == 'table' then
    local ps = prev['status']
    if type(ps) == 'string' and ps ~= '' and ps ~= st then
      bump(KEYS[4], ps .. '>' .. st, delta)
    end
  end
end
`
}()

// Write records rec as the latest result of rec.Key and, when rec.BatchID is set, as the
// batch's result for that key. It fills rec.Previous from the key's earlier result (a
// result from the same batch is a redelivery: its Previous is kept, so the same result
// is written again), normalises times to UTC and sets VerifiedAt to now when zero.
//
// The JSON goes to storage first, then Redis; an error leaves the write safe to repeat.
// Batch statistics are updated in one atomic script: a key already in the batch has its
// result replaced and its counts moved, never counted twice.
//
// Options add the caller's own Redis commands to the write's round trips.
func (s *Store) Write(ctx context.Context, rec *Record, opts ...WriteOption) (WriteOutcome, error) {
	var o writeOptions
	for _, opt := range opts {
		opt(&o)
	}
	data, err := s.prepare(ctx, rec, &o)
	if err != nil {
		return WriteOutcome{}, err
	}
	// With the earlier result known, the caller's first commands go alongside the
	// storage write rather than ahead of it.
	var before func() error
	if o.prevKnown && o.before != nil {
		before = s.send(ctx, o.before)
		if s.ap == nil { // a pipeline, sent by its wait: sent now, beside the storage write
			wait, done := before, make(chan error, 1)
			go func() { done <- wait() }()
			before = func() error { return <-done }
		}
	}
	err = s.bucket.Put(ctx, rec.Key+".json", bytes.NewReader(data),
		&storage.PutOptions{ContentType: "application/json", Size: int64(len(data))})
	if before != nil {
		if berr := before(); berr != nil && err == nil {
			return WriteOutcome{}, fmt.Errorf("write result %q: %w", rec.Key, berr)
		}
	}
	if err != nil {
		return WriteOutcome{}, fmt.Errorf("write result %q to storage: %w", rec.Key, err)
	}
	return s.record(ctx, rec, data, o.after)
}

// WriteOption adjusts one [Store.Write].
type WriteOption func(*writeOptions)

type writeOptions struct {
	before, after func(redis.Pipeliner)
	prev          *Previous
	prevKnown     bool
}

// WithRedis queues the caller's commands in the write's Redis round trips: before in the
// one that reads the key's earlier result (or, given WithPrevious, in one alongside the
// storage write), done before the result is recorded; after in the one that records the
// result, once storage has it. Either may be nil. A failed command of before fails the
// write; the caller checks those of after itself.
func WithRedis(before, after func(pipe redis.Pipeliner)) WriteOption {
	return func(o *writeOptions) { o.before, o.after = before, after }
}

// WithPrevious gives the write what [Store.Previous] returned for the record's key and
// batch, read earlier (while the selfie was fetched, say), so that the write does not
// read it again.
func WithPrevious(p *Previous) WriteOption {
	return func(o *writeOptions) { o.prev, o.prevKnown = p, true }
}

// Previous returns what the Previous of a result of key in batchID (may be empty) would
// be if it were written now: the key's latest result, or, if batchID already holds a
// result of key (a redelivery), that result's own Previous. Nil when there is none.
func (s *Store) Previous(ctx context.Context, key, batchID string) (*Previous, error) {
	return s.previous(ctx, key, batchID, nil)
}

// prepare validates rec, fills its Previous and VerifiedAt, and returns its JSON.
func (s *Store) prepare(ctx context.Context, rec *Record, o *writeOptions) ([]byte, error) {
	if err := rec.Validate(); err != nil {
		return nil, err
	}
	if rec.VerifiedAt.IsZero() {
		rec.VerifiedAt = time.Now()
	}
	if o.prevKnown {
		rec.Previous = o.prev
	} else {
		prev, err := s.previous(ctx, rec.Key, rec.BatchID, o.before)
		if err != nil {
			return nil, err
		}
		rec.Previous = prev
	}
	rec.normalize()
	return MarshalRecord(rec)
}

// record writes rec (encoded as data) to Redis in one round trip: its batch's statistics
// (the write script, on the batch's slot) and the latest result of its key.
func (s *Store) record(ctx context.Context, rec *Record, data []byte, after func(redis.Pipeliner)) (WriteOutcome, error) {
	score := ""
	if rec.Score != nil {
		score = strconv.FormatFloat(*rec.Score, 'f', -1, 64)
	}
	var (
		id      = rec.BatchID
		keys    []string
		args    []any
		counted *redis.Cmd
	)
	var latest *redis.IntCmd
	_ = s.send(ctx, func(pipe redis.Pipeliner) {
		if id != "" {
			keys = []string{BatchResultsKey(id), BatchCountsKey(id), BatchHistKey(id), BatchFlipsKey(id), BatchMetaKey(id)}
			args = []any{rec.Key, data, s.ttlSeconds(), formatTime(time.Now()), id}
			counted = pipe.EvalSha(ctx, writeScript.Hash(), keys, args...)
		}
		latest = pipe.HSet(ctx, ResultKey(rec.Key),
			ResultFieldJSON, data,
			ResultFieldStatus, string(rec.Status),
			ResultFieldScore, score,
			ResultFieldVerifiedAt, formatTime(rec.VerifiedAt),
			ResultFieldBatchID, id,
		)
		if after != nil {
			after(pipe)
		}
	})() // each command's error is checked below

	var out WriteOutcome
	if counted != nil {
		if redis.HasErrorPrefix(counted.Err(), "NOSCRIPT") {
			counted = writeScript.Run(ctx, s.rdb, keys, args...) // loads the script
		}
		res, err := counted.Int64Slice()
		if err != nil {
			return WriteOutcome{}, fmt.Errorf("record result %q in batch %s: %w", rec.Key, id, err)
		}
		out = WriteOutcome{Redelivered: len(res) > 0 && res[0] == 0, Completed: len(res) > 1 && res[1] == 1}
		if out.Redelivered {
			s.log.Debug().Str("key", rec.Key).Str("batch_id", id).Str("status", string(rec.Status)).
				Msg("result redelivered: replaced, not counted again")
		}
	}
	if err := latest.Err(); err != nil {
		return out, fmt.Errorf("record latest result of %q: %w", rec.Key, err)
	}
	return out, nil
}

// previous returns what the Previous of a result of key in batchID must be: the earlier
// record of key in the same batch keeps its own Previous (a redelivery); otherwise the
// key's latest result. before's commands share the round trip.
func (s *Store) previous(ctx context.Context, key, batchID string, before func(redis.Pipeliner)) (*Previous, error) {
	var inBatch, latest *redis.StringCmd
	err := s.send(ctx, func(pipe redis.Pipeliner) {
		if before != nil {
			before(pipe)
		}
		if batchID != "" {
			inBatch = pipe.HGet(ctx, BatchResultsKey(batchID), key)
		}
		latest = pipe.HGet(ctx, ResultKey(key), ResultFieldJSON)
	})()
	if err != nil {
		return nil, fmt.Errorf("read previous result of %q: %w", key, err)
	}
	if inBatch != nil {
		b, err := inBatch.Bytes()
		switch {
		case err == nil:
			earlier, err := UnmarshalRecord(b)
			if err != nil {
				return nil, fmt.Errorf("read previous result of %q in batch %s: %w", key, batchID, err)
			}
			return earlier.Previous, nil
		case !errors.Is(err, redis.Nil):
			return nil, fmt.Errorf("read previous result of %q in batch %s: %w", key, batchID, err)
		}
	}
	b, err := latest.Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read previous result of %q: %w", key, err)
	}
	last, err := UnmarshalRecord(b)
	if err != nil {
		return nil, fmt.Errorf("read previous result of %q: %w", key, err)
	}
	if batchID != "" && last.BatchID == batchID {
		return last.Previous, nil // the batch's keys expired; still a redelivery
	}
	return previousOf(last), nil
}

// send sends the commands fill adds to a pipeline and returns a wait for their results:
// the first error among them, a missing key (redis.Nil) aside. On an autopipeliner (it
// must be the asynchronous face, go-redis AsyncAutoPipeline) they are submitted at once
// and join the next batch with whatever else is pending there (the other tasks' result
// commands, in a worker); elsewhere they go as one pipeline, sent by wait.
func (s *Store) send(ctx context.Context, fill func(redis.Pipeliner)) (wait func() error) {
	pipe := s.rdb.Pipeline()
	fill(pipe)
	cmds := pipe.Cmds()
	firstErr := func() error {
		for _, c := range cmds {
			if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
		}
		return nil
	}
	if s.ap == nil {
		return func() error {
			_, _ = pipe.Exec(ctx)
			return firstErr()
		}
	}
	futures := make([]redis.AutoFuture, len(cmds))
	for i, c := range cmds {
		futures[i] = s.ap.Submit(ctx, c)
	}
	return func() error {
		for _, f := range futures {
			_ = f.Wait() // the command's own error, read below
		}
		return firstErr()
	}
}

// Get returns the latest result of key: from Redis, or from the JSON in storage when
// Redis has none. It returns an error wrapping ErrNotFound when neither has it.
func (s *Store) Get(ctx context.Context, key string) (*Record, error) {
	b, err := s.rdb.HGet(ctx, ResultKey(key), ResultFieldJSON).Bytes()
	if err == nil {
		return UnmarshalRecord(b)
	}
	if !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read result of %q: %w", key, err)
	}
	r, err := s.bucket.Get(ctx, key+".json", &storage.GetOptions{MaxBytes: maxRecordBytes})
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrInvalidKey) {
		return nil, fmt.Errorf("result of %q: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read result of %q from storage: %w", key, err)
	}
	defer r.Close()
	b, err = io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read result of %q from storage: %w", key, err)
	}
	s.log.Debug().Str("key", key).Msg("result read from storage: not in Redis")
	return UnmarshalRecord(b)
}

// formatTime writes t as RFC 3339 in UTC, as every time this package stores.
func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
