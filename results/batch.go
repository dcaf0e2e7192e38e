package results

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// BatchInfo describes a batch: what was enqueued, from where, and the state of its
// completion callback.
type BatchInfo struct {
	// ID names the batch (see NewBatchID and ValidateBatchID).
	ID string `json:"id"`
	// Source says what was enqueued, e.g. "prefix selfies/" or "manifest keys.csv".
	Source string `json:"source,omitempty"`
	// Storage is the storage location the keys were read from. It must not carry
	// credentials.
	Storage string `json:"storage,omitempty"`
	// Threshold is the batch's default threshold (tasks may override it).
	Threshold float64 `json:"threshold"`
	// CreatedAt is when the batch was created, UTC. CreateBatch sets it to now when zero.
	CreatedAt time.Time `json:"created_at"`
	// CallbackURL receives the completion callback; empty for none.
	CallbackURL string `json:"callback_url,omitempty"`
	// CallbackState and CallbackAttempts are the callback's delivery state, as last set
	// with SetBatchField / IncrBatchField (FieldCallbackState, FieldCallbackAttempts).
	CallbackState    string `json:"callback_state,omitempty"`
	CallbackAttempts int64  `json:"callback_attempts,omitempty"`
	// Extra holds any other field set with SetBatchField.
	Extra map[string]string `json:"extra,omitempty"`
}

// BatchSummary is a batch's progress and statistics, read in one round trip.
type BatchSummary struct {
	Info BatchInfo `json:"info"`
	// Enqueued counts tasks added to the queue; Duplicates, tasks that were already
	// there (a re-run enqueue); Malformed, source rows that could not be read.
	Enqueued   int64 `json:"enqueued"`
	Duplicates int64 `json:"duplicates"`
	Malformed  int64 `json:"malformed"`
	// EnqueueDone is true once the whole source has been enqueued (FinishEnqueue).
	EnqueueDone bool `json:"enqueue_done"`
	// Counts is the number of results per status; statuses with none are absent.
	Counts map[Status]int64 `json:"counts"`
	// Done is the number of results: the sum of Counts.
	Done int64 `json:"done"`
	// Histogram counts scored results per bin (see HistogramBin).
	Histogram [HistogramBins]int64 `json:"histogram"`
	// Flips counts keys whose status changed from their previous result, by FlipName.
	Flips map[string]int64 `json:"flips"`
	// Complete is EnqueueDone && Done >= Enqueued.
	Complete bool `json:"complete"`
	// Progress is Done/Enqueued in [0, 1]; 1 for a complete batch.
	Progress float64 `json:"progress"`
	// UpdatedAt is the time of the batch's last enqueue or result, UTC.
	UpdatedAt time.Time `json:"updated_at"`
}

// createBatchScript creates a batch's meta hash unless it already has a creation time.
// KEYS: meta. ARGV: TTL seconds (0: none), then field/value pairs. Returns 1 if created.
var createBatchScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], 'created_at') == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
local ttl = tonumber(ARGV[1])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
`)

// CreateBatch records a new batch and adds it to the batch index. It returns false,
// leaving the batch as it was, when a batch with this id already exists (a resumed
// enqueue). info.ID must pass ValidateBatchID.
func (s *Store) CreateBatch(ctx context.Context, info BatchInfo) (created bool, err error) {
	if err := ValidateBatchID(info.ID); err != nil {
		return false, err
	}
	if info.CreatedAt.IsZero() {
		info.CreatedAt = time.Now()
	}
	now := formatTime(time.Now())
	args := []any{s.ttlSeconds(),
		FieldID, info.ID,
		FieldSource, info.Source,
		FieldStorage, info.Storage,
		FieldThreshold, strconv.FormatFloat(info.Threshold, 'f', -1, 64),
		FieldCreatedAt, formatTime(info.CreatedAt),
		FieldUpdatedAt, now,
	}
	if info.CallbackURL != "" {
		args = append(args, FieldCallbackURL, info.CallbackURL)
	}
	n, err := createBatchScript.Run(ctx, s.rdb, []string{BatchMetaKey(info.ID)}, args...).Int64()
	if err != nil {
		return false, fmt.Errorf("create batch %s: %w", info.ID, err)
	}
	// Also when the batch existed: an earlier call may have stopped before this line.
	if err := s.rdb.ZAddNX(ctx, BatchIndexKey, redis.Z{Score: float64(info.CreatedAt.Unix()), Member: info.ID}).Err(); err != nil {
		return false, fmt.Errorf("index batch %s: %w", info.ID, err)
	}
	return n == 1, nil
}

// AddEnqueued adds to a batch's enqueue counters: tasks enqueued, tasks that were already
// queued, and malformed source rows.
func (s *Store) AddEnqueued(ctx context.Context, id string, enqueued, duplicates, malformed int64) error {
	if err := ValidateBatchID(id); err != nil {
		return err
	}
	meta := BatchMetaKey(id)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HIncrBy(ctx, meta, FieldEnqueued, enqueued)
		p.HIncrBy(ctx, meta, FieldDuplicates, duplicates)
		p.HIncrBy(ctx, meta, FieldMalformed, malformed)
		p.HSet(ctx, meta, FieldUpdatedAt, formatTime(time.Now()))
		p.HSetNX(ctx, meta, FieldID, id)
		s.expire(ctx, p, meta)
		return nil
	})
	if err != nil {
		return fmt.Errorf("count enqueued tasks of batch %s: %w", id, err)
	}
	return nil
}

// expire queues the retention TTL of key on p, if there is one.
func (s *Store) expire(ctx context.Context, p redis.Pipeliner, key string) {
	if ttl := s.ttlSeconds(); ttl > 0 {
		p.Expire(ctx, key, time.Duration(ttl)*time.Second)
	}
}

// finishEnqueueScript marks a batch's enqueueing done.
// KEYS: meta, counts. ARGV: TTL seconds (0: none), updated_at, batch id.
// Returns 1 if this call completed the batch (every result was already in).
var finishEnqueueScript = redis.NewScript(`
local was = redis.call('HGET', KEYS[1], 'enqueue_done')
redis.call('HSET', KEYS[1], 'enqueue_done', '1', 'updated_at', ARGV[2])
redis.call('HSETNX', KEYS[1], 'id', ARGV[3])
local ttl = tonumber(ARGV[1])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
if was == '1' then return 0 end
local enq = tonumber(redis.call('HGET', KEYS[1], 'enqueued') or '0') or 0
local done = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do done = done + tonumber(v) end
if done >= enq then return 1 end
return 0
`)

// FinishEnqueue marks the batch's source as fully enqueued, so that the batch is complete
// once every enqueued task has a result. It returns true when the batch is complete
// already (every result came in before enqueueing finished): then no Write will report
// WriteOutcome.Completed. Calling it again returns false.
func (s *Store) FinishEnqueue(ctx context.Context, id string) (completed bool, err error) {
	if err := ValidateBatchID(id); err != nil {
		return false, err
	}
	n, err := finishEnqueueScript.Run(ctx, s.rdb, []string{BatchMetaKey(id), BatchCountsKey(id)},
		s.ttlSeconds(), formatTime(time.Now()), id).Int64()
	if err != nil {
		return false, fmt.Errorf("finish enqueue of batch %s: %w", id, err)
	}
	return n == 1, nil
}

// SetBatchField sets one field of a batch's meta hash, e.g. FieldCallbackState. It is
// meant for state kept alongside the batch (callback delivery); Batch reports unknown
// fields in BatchInfo.Extra.
func (s *Store) SetBatchField(ctx context.Context, id, field, value string) error {
	if err := ValidateBatchID(id); err != nil {
		return err
	}
	meta := BatchMetaKey(id)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, meta, field, value)
		s.expire(ctx, p, meta)
		return nil
	})
	if err != nil {
		return fmt.Errorf("set %s of batch %s: %w", field, id, err)
	}
	return nil
}

// SetBatchFieldNX sets one field of a batch's meta hash only if it is not set yet, and
// reports whether it did: of many callers, exactly one wins (e.g. to claim the delivery
// of a completion callback).
func (s *Store) SetBatchFieldNX(ctx context.Context, id, field, value string) (bool, error) {
	if err := ValidateBatchID(id); err != nil {
		return false, err
	}
	meta := BatchMetaKey(id)
	var set *redis.BoolCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		set = p.HSetNX(ctx, meta, field, value)
		s.expire(ctx, p, meta)
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("set %s of batch %s: %w", field, id, err)
	}
	return set.Val(), nil
}

// IncrBatchField adds delta to an integer field of a batch's meta hash (e.g.
// FieldCallbackAttempts) and returns the new value.
func (s *Store) IncrBatchField(ctx context.Context, id, field string, delta int64) (int64, error) {
	if err := ValidateBatchID(id); err != nil {
		return 0, err
	}
	meta := BatchMetaKey(id)
	var n *redis.IntCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		n = p.HIncrBy(ctx, meta, field, delta)
		s.expire(ctx, p, meta)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("add to %s of batch %s: %w", field, id, err)
	}
	return n.Val(), nil
}

// Batch returns the summary of batch id, or an error wrapping ErrBatchNotFound when
// Redis holds nothing for it.
func (s *Store) Batch(ctx context.Context, id string) (*BatchSummary, error) {
	if err := ValidateBatchID(id); err != nil {
		return nil, err
	}
	pipe := s.rdb.Pipeline()
	meta := pipe.HGetAll(ctx, BatchMetaKey(id))
	counts := pipe.HGetAll(ctx, BatchCountsKey(id))
	hist := pipe.HGetAll(ctx, BatchHistKey(id))
	flips := pipe.HGetAll(ctx, BatchFlipsKey(id))
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read batch %s: %w", id, err)
	}
	if len(meta.Val()) == 0 && len(counts.Val()) == 0 {
		return nil, fmt.Errorf("batch %s: %w", id, ErrBatchNotFound)
	}
	sum, err := parseSummary(id, meta.Val(), counts.Val(), hist.Val(), flips.Val())
	if err != nil {
		return nil, fmt.Errorf("read batch %s: %w", id, err)
	}
	return sum, nil
}

// parseSummary builds a BatchSummary from the batch's hashes.
func parseSummary(id string, meta, counts, hist, flips map[string]string) (*BatchSummary, error) {
	sum := &BatchSummary{Info: BatchInfo{ID: id}, Counts: map[Status]int64{}, Flips: map[string]int64{}}
	var err error
	num := func(field, v string) int64 {
		n, e := strconv.ParseInt(v, 10, 64)
		if e != nil && err == nil {
			err = fmt.Errorf("field %s: %w", field, e)
		}
		return n
	}
	tm := func(field, v string) time.Time {
		t, e := time.Parse(time.RFC3339Nano, v)
		if e != nil && err == nil {
			err = fmt.Errorf("field %s: %w", field, e)
		}
		return t.UTC()
	}
	for f, v := range meta {
		switch f {
		case FieldID:
			sum.Info.ID = v
		case FieldSource:
			sum.Info.Source = v
		case FieldStorage:
			sum.Info.Storage = v
		case FieldThreshold:
			t, e := strconv.ParseFloat(v, 64)
			if e != nil && err == nil {
				err = fmt.Errorf("field %s: %w", f, e)
			}
			sum.Info.Threshold = t
		case FieldCreatedAt:
			sum.Info.CreatedAt = tm(f, v)
		case FieldUpdatedAt:
			sum.UpdatedAt = tm(f, v)
		case FieldCallbackURL:
			sum.Info.CallbackURL = v
		case FieldCallbackState:
			sum.Info.CallbackState = v
		case FieldCallbackAttempts:
			sum.Info.CallbackAttempts = num(f, v)
		case FieldEnqueued:
			sum.Enqueued = num(f, v)
		case FieldDuplicates:
			sum.Duplicates = num(f, v)
		case FieldMalformed:
			sum.Malformed = num(f, v)
		case FieldEnqueueDone:
			sum.EnqueueDone = v == "1"
		default:
			if sum.Info.Extra == nil {
				sum.Info.Extra = map[string]string{}
			}
			sum.Info.Extra[f] = v
		}
	}
	for f, v := range counts {
		n := num("counts "+f, v)
		sum.Counts[Status(f)] = n
		sum.Done += n
	}
	for f, v := range hist {
		bin, e := strconv.Atoi(f)
		if e != nil || bin < 0 || bin >= HistogramBins {
			if err == nil {
				err = fmt.Errorf("histogram bin %q out of range", f)
			}
			continue
		}
		sum.Histogram[bin] = num("hist "+f, v)
	}
	for f, v := range flips {
		sum.Flips[f] = num("flips "+f, v)
	}
	sum.Complete = sum.EnqueueDone && sum.Done >= sum.Enqueued
	switch {
	case sum.Complete:
		sum.Progress = 1
	case sum.Enqueued > 0:
		sum.Progress = min(float64(sum.Done)/float64(sum.Enqueued), 1)
	}
	return sum, err
}

// Batches returns the summaries of up to limit batches, newest first (all of them when
// limit <= 0). Batches whose keys have expired are dropped from the index on the way.
func (s *Store) Batches(ctx context.Context, limit int) ([]BatchSummary, error) {
	const page = 100
	var (
		out   []BatchSummary
		stale []any
	)
	for start := int64(0); limit <= 0 || len(out) < limit; start += page {
		ids, err := s.rdb.ZRevRange(ctx, BatchIndexKey, start, start+page-1).Result()
		if err != nil {
			return nil, fmt.Errorf("list batches: %w", err)
		}
		for _, id := range ids {
			if limit > 0 && len(out) >= limit {
				break
			}
			sum, err := s.Batch(ctx, id)
			switch {
			case errors.Is(err, ErrBatchNotFound) || errors.Is(err, ErrInvalidBatchID):
				stale = append(stale, id)
			case err != nil:
				return nil, err
			default:
				out = append(out, *sum)
			}
		}
		if len(ids) < page {
			break
		}
	}
	if len(stale) > 0 {
		if err := s.rdb.ZRem(ctx, BatchIndexKey, stale...).Err(); err != nil {
			return nil, fmt.Errorf("drop expired batches from the index: %w", err)
		}
		s.log.Debug().Int("batches", len(stale)).Msg("expired batches dropped from the index")
	}
	return out, nil
}
