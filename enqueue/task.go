package enqueue

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hibiken/asynq"

	"github.com/livenessq/livenessq/results"
)

// TaskType is the asynq task type of one liveness verification. The worker registers its
// handler under this name.
const TaskType = "liveness:verify"

// DefaultQueue is the asynq queue verification tasks go to unless Config.Queue says
// otherwise.
const DefaultQueue = "liveness"

// PayloadVersion is the version of the payload written by NewVerifyTask. ParsePayload
// accepts this version only; an incompatible change to the payload bumps it.
const PayloadVersion = 1

// MaxKeyLen is the longest key, in bytes, a task may name (S3's limit).
const MaxKeyLen = 1024

// DefaultThreshold is the liveness threshold used when neither a row nor its batch gives
// one.
const DefaultThreshold = 0.6

// Payload is the body of a TaskType task: a small, versioned JSON document naming the
// object to verify. It never holds image bytes.
type Payload struct {
	// V is the payload version; NewVerifyTask sets PayloadVersion when it is 0.
	V int `json:"v"`
	// Storage is the canonical location of the storage the key lives in (a storage
	// Bucket's URL(): an s3:// URL or a file:// URL), never with credentials.
	Storage string `json:"storage"`
	// Key is the object's key relative to Storage.
	Key string `json:"key"`
	// Threshold is the liveness threshold for this task; nil lets the worker use its
	// default.
	Threshold *float64 `json:"threshold,omitempty"`
	// BatchID is the batch the task belongs to.
	BatchID string `json:"batch_id"`
	// EnqueuedAt is when the task was made; NewVerifyTask sets the current time (UTC)
	// when it is zero.
	EnqueuedAt time.Time `json:"enqueued_at"`
}

// ValidateThreshold returns nil for a number in [0, 1] and otherwise an error wrapping
// ErrBadThreshold whose message says what was wrong, e.g.
// "threshold must be a number in [0, 1], got 2". NaN and infinities are refused.
func ValidateThreshold(t float64) error {
	if math.IsNaN(t) || t < 0 || t > 1 {
		return fmt.Errorf("%w, got %v", ErrBadThreshold, t)
	}
	return nil
}

// ValidateKey returns nil for a key a task may carry: non-empty, at most MaxKeyLen bytes,
// valid UTF-8 and free of NUL bytes. Otherwise the error wraps ErrBadKey. Whether the key
// is acceptable to a particular storage (e.g. a local directory refusing "../") is the
// storage's decision, made by the worker.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty key", ErrBadKey)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%w: key is %d bytes, longer than %d", ErrBadKey, len(key), MaxKeyLen)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: key is not valid UTF-8", ErrBadKey)
	case strings.IndexByte(key, 0) >= 0:
		return fmt.Errorf("%w: key contains a NUL byte", ErrBadKey)
	}
	return nil
}

// validateStorage checks a storage location: non-empty and without credentials in it
// (payloads are stored in Redis in plain text).
func validateStorage(loc string) error {
	if loc == "" {
		return fmt.Errorf("%w: empty storage location", ErrBadBatch)
	}
	if u, err := url.Parse(loc); err == nil && u.User != nil {
		return fmt.Errorf("%w: storage location must not carry credentials", ErrBadBatch)
	}
	return nil
}

// validateBatchID checks a batch id the way the results package, which names the
// batch's Redis keys after it, requires.
func validateBatchID(id string) error {
	if err := results.ValidateBatchID(id); err != nil {
		return fmt.Errorf("%w: %w", ErrBadBatch, err)
	}
	return nil
}

// validate checks every field of p.
func (p Payload) validate() error {
	if p.V != PayloadVersion {
		return fmt.Errorf("unsupported payload version %d (this build reads %d)", p.V, PayloadVersion)
	}
	if err := ValidateKey(p.Key); err != nil {
		return err
	}
	if p.Threshold != nil {
		if err := ValidateThreshold(*p.Threshold); err != nil {
			return err
		}
	}
	if err := validateBatchID(p.BatchID); err != nil {
		return err
	}
	if err := validateStorage(p.Storage); err != nil {
		return err
	}
	if y := p.EnqueuedAt.Year(); y < 0 || y > 9999 {
		return fmt.Errorf("enqueued_at year %d out of range", y)
	}
	return nil
}

// NewVerifyTask returns a TaskType task carrying p, after setting V and EnqueuedAt when
// they are zero and validating every field: the key (see ValidateKey), the threshold when
// given (see ValidateThreshold), a non-empty batch id and storage location. opts are
// passed to asynq.NewTask. The task carries no id: Client sets TaskID(p.BatchID,
// p.Storage, p.Key) when it enqueues.
func NewVerifyTask(p Payload, opts ...asynq.Option) (*asynq.Task, error) {
	if p.V == 0 {
		p.V = PayloadVersion
	}
	if p.EnqueuedAt.IsZero() {
		p.EnqueuedAt = time.Now().UTC()
	}
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("new verify task: %w", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // storage URLs stay readable in asynq's tools
	if err := enc.Encode(p); err != nil {
		return nil, fmt.Errorf("new verify task: encode payload: %w", err)
	}
	return asynq.NewTask(TaskType, bytes.TrimSuffix(buf.Bytes(), []byte("\n")), opts...), nil
}

// ParsePayload reads a TaskType payload strictly: it must be one JSON object of version
// PayloadVersion with a valid key, batch id and storage location, and a threshold, when
// present, in [0, 1]. Fields it does not know are ignored. Every error wraps
// ErrBadPayload (and ErrBadKey or ErrBadThreshold when one of those is the cause), so a
// worker can treat it as permanent.
func ParsePayload(b []byte) (Payload, error) {
	var p Payload
	if err := json.Unmarshal(b, &p); err != nil {
		return Payload{}, fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	if err := p.validate(); err != nil {
		return Payload{}, fmt.Errorf("%w: %w", ErrBadPayload, err)
	}
	return p, nil
}

// TaskID returns the asynq task id of the verification of key in storage for batch:
// "lq-" followed by 32 hex digits of a SHA-256 over the three. It is deterministic, so
// re-running an enqueue finds the tasks it already made; the same key in another batch
// gets another id.
func TaskID(batchID, storage, key string) string {
	h := sha256.New()
	h.Write([]byte(batchID))
	h.Write([]byte{0})
	h.Write([]byte(storage))
	h.Write([]byte{0})
	h.Write([]byte(key))
	var sum [sha256.Size]byte
	return "lq-" + hex.EncodeToString(h.Sum(sum[:0])[:16])
}
