package results

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
)

// Redis names (DESIGN.md, "Redis names"). This file is the one place they are built;
// other packages use these functions and constants rather than spelling names out.
//
// Every batch key carries the hash tag {batch:ID}, so all of one batch's keys live in one
// Redis Cluster slot and one Lua script may touch them together. The latest result of an
// object key is a single key of its own, touched only by single-key commands.
const (
	// KeyPrefix starts every key livenessq owns.
	KeyPrefix = "livenessq:"
	// BatchIndexKey is a sorted set of batch ids scored by their creation time (Unix
	// seconds): the list of batches, newest last.
	BatchIndexKey = KeyPrefix + "{batches}"
)

// Fields of the latest-result hash (ResultKey).
const (
	// ResultFieldJSON holds the whole record as JSON.
	ResultFieldJSON = "json"
	// ResultFieldStatus, ResultFieldScore, ResultFieldVerifiedAt and ResultFieldBatchID
	// repeat a few of the record's fields flat, for people reading Redis by hand. The score
	// is empty for an unscored status.
	ResultFieldStatus     = "status"
	ResultFieldScore      = "score"
	ResultFieldVerifiedAt = "verified_at"
	ResultFieldBatchID    = "batch_id"
)

// Fields of a batch's meta hash (BatchMetaKey).
const (
	FieldID               = "id"
	FieldSource           = "source"
	FieldStorage          = "storage"
	FieldThreshold        = "threshold"
	FieldCreatedAt        = "created_at" // RFC 3339, UTC
	FieldUpdatedAt        = "updated_at" // RFC 3339, UTC; the last enqueue or result
	FieldCallbackURL      = "callback_url"
	FieldEnqueued         = "enqueued"     // tasks added to the queue
	FieldDuplicates       = "duplicates"   // tasks that were already queued
	FieldMalformed        = "malformed"    // source rows that could not be read
	FieldEnqueueDone      = "enqueue_done" // "1" once the source has been fully enqueued
	FieldCallbackState    = "callback_state"
	FieldCallbackAttempts = "callback_attempts"
)

// ResultKey names the hash that holds the latest result of object key.
func ResultKey(key string) string { return KeyPrefix + "result:{" + key + "}" }

// batchKey names one of batch id's keys.
func batchKey(id, suffix string) string { return KeyPrefix + "{batch:" + id + "}:" + suffix }

// BatchMetaKey names the hash of a batch's description and enqueue counters (the Field*
// constants).
func BatchMetaKey(id string) string { return batchKey(id, "meta") }

// BatchCountsKey names the hash status → number of results of the batch.
func BatchCountsKey(id string) string { return batchKey(id, "counts") }

// BatchHistKey names the hash bin (0..19, see HistogramBin) → number of scored results.
func BatchHistKey(id string) string { return batchKey(id, "hist") }

// BatchFlipsKey names the hash "old>new" status → number of keys whose status changed
// from their previous result.
func BatchFlipsKey(id string) string { return batchKey(id, "flips") }

// BatchResultsKey names the hash object key → record JSON of every result of the batch.
func BatchResultsKey(id string) string { return batchKey(id, "results") }

// FlipName returns the flips field for a change from status from to status to: "from>to".
func FlipName(from, to Status) string { return string(from) + ">" + string(to) }

// maxBatchIDLen bounds batch ids so that keys stay short.
const maxBatchIDLen = 128

// ValidateBatchID reports whether id can name a batch: 1..128 characters among ASCII
// letters, digits and . _ - : (never braces, which would break the hash tag). The error
// wraps ErrInvalidBatchID.
func ValidateBatchID(id string) error {
	if id == "" || len(id) > maxBatchIDLen {
		return fmt.Errorf("%w: %q must have 1..%d characters", ErrInvalidBatchID, id, maxBatchIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == '-', c == ':':
		default:
			return fmt.Errorf("%w: %q: character %q not allowed", ErrInvalidBatchID, id, c)
		}
	}
	return nil
}

// NewBatchID returns a fresh batch id that sorts by creation time: the UTC time to the
// second, then 6 random hex digits, e.g. "20261127T121500Z-ab12cd".
func NewBatchID() string { return newBatchID(time.Now()) }

func newBatchID(t time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}
