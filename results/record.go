package results

import (
	"encoding/json"
	"fmt"
	"time"
)

// Status is the outcome class of one verification. Every task ends in exactly one
// result with one Status (DESIGN.md, "Outcome classes").
type Status string

// The outcome classes, with the values the result record, the batch counters and the
// exports carry.
const (
	// StatusLive: the API scored the selfie at or above the threshold.
	StatusLive Status = "live"
	// StatusNotLive: the API scored the selfie below the threshold.
	StatusNotLive Status = "not_live"
	// StatusNoFace: the API answered with no face.
	StatusNoFace Status = "no_face"
	// StatusInvalidImage: the image failed the pre-check (format, dimensions, size cap);
	// no API call was made.
	StatusInvalidImage Status = "invalid_image"
	// StatusRejected: the API refused this image (400, 413, 415 or 422).
	StatusRejected Status = "rejected"
	// StatusNotFound: the object does not exist.
	StatusNotFound Status = "not_found"
	// StatusFailed: retries were exhausted on server, network or storage errors.
	StatusFailed Status = "failed"
	// StatusBadTask: the task payload could not be read.
	StatusBadTask Status = "bad_task"
)

// Statuses lists every Status in a fixed display order: the scored ones first, then the
// others roughly by how far the selfie got. Callers must not modify it.
var Statuses = []Status{
	StatusLive,
	StatusNotLive,
	StatusNoFace,
	StatusInvalidImage,
	StatusRejected,
	StatusNotFound,
	StatusFailed,
	StatusBadTask,
}

// Valid reports whether s is one of Statuses.
func (s Status) Valid() bool {
	for _, v := range Statuses {
		if s == v {
			return true
		}
	}
	return false
}

// Scored reports whether a result with this status carries a liveness score (live and
// not_live): only those enter the score histogram.
func (s Status) Scored() bool { return s == StatusLive || s == StatusNotLive }

// String returns the status as written in records and counters.
func (s Status) String() string { return string(s) }

// ParseStatus returns the Status spelled s, or an error wrapping ErrInvalidRecord.
func ParseStatus(s string) (Status, error) {
	st := Status(s)
	if !st.Valid() {
		return "", fmt.Errorf("%w: unknown status %q", ErrInvalidRecord, s)
	}
	return st, nil
}

// HistogramBins is the number of bins of a batch's score histogram; bin i counts scores in
// [i/20, (i+1)/20), and the last bin also holds 1.0.
const HistogramBins = 20

// HistogramBin returns the histogram bin of score: min(int(score*20), 19), clamped at 0.
// The batch script in Redis computes the same function.
func HistogramBin(score float64) int {
	if !(score > 0) { // negative, zero or NaN
		return 0
	}
	b := int(score * HistogramBins)
	return min(b, HistogramBins-1)
}

// Record is the result of one verification: the JSON written to `<results>/<key>.json`
// and kept in Redis. Its JSON form is a contract (DESIGN.md, "Result record"): it never
// holds image bytes or secrets.
type Record struct {
	// Key is the object key of the selfie in its storage location.
	Key string `json:"key"`
	// Bucket names the storage location the selfie was read from (bucket or directory).
	Bucket string `json:"bucket"`
	// ETag is the version of the object that was verified; empty when it was not read.
	ETag string `json:"etag,omitempty"`
	// BatchID is the batch the task belonged to; empty for a task outside any batch.
	BatchID string `json:"batch_id"`
	// Status is the outcome class.
	Status Status `json:"status"`
	// Score is the API's liveness score (faces_liveness); nil unless Status.Scored().
	Score *float64 `json:"score,omitempty"`
	// Threshold is the score at or above which the selfie counts as live.
	Threshold float64 `json:"threshold"`
	// Live is Score >= Threshold; nil unless Status.Scored().
	Live *bool `json:"live,omitempty"`
	// Faces is the number of faces the API detected; 0 when no call was made.
	Faces int `json:"faces"`
	// Image describes the image as read from its header; nil when it was not read.
	Image *Image `json:"image,omitempty"`
	// LowResolution flags an image whose shorter side is under the recommended 900 px.
	LowResolution bool `json:"low_resolution"`
	// Reason says why a result is not scored (for statuses other than live/not_live).
	Reason string `json:"reason,omitempty"`
	// Kairos identifies the API call; nil when no call was answered.
	Kairos *Kairos `json:"kairos,omitempty"`
	// Attempts is how many times the task ran, this one included.
	Attempts int `json:"attempts"`
	// VerifiedAt is when the result was produced, in UTC (RFC 3339).
	VerifiedAt time.Time `json:"verified_at"`
	// Previous summarises the key's earlier result, if it had one. Store.Write fills it.
	Previous *Previous `json:"previous,omitempty"`
}

// Image is what the pre-check learned from an image's header.
type Image struct {
	Format string `json:"format"` // "jpeg", "png" or "webp"; the sniffed type otherwise
	Width  int    `json:"width"`  // pixels
	Height int    `json:"height"` // pixels
	Bytes  int64  `json:"bytes"`  // object size
}

// Kairos identifies one answered API call.
type Kairos struct {
	APIReqUID    string    `json:"api_req_uid,omitempty"` // the body's api_req_uid
	RequestID    string    `json:"request_id,omitempty"`  // the X-Request-ID header
	ResponseCode int       `json:"response_code"`         // the body's response_code, verbatim
	RequestedAt  time.Time `json:"requested_at,omitzero"` // the body's requested_at, UTC
	ProcessedAt  time.Time `json:"processed_at,omitzero"` // the body's processed_at, UTC
}

// Previous summarises a key's earlier result.
type Previous struct {
	Status     Status    `json:"status"`
	Score      *float64  `json:"score,omitempty"`
	VerifiedAt time.Time `json:"verified_at"`
}

// previousOf returns the summary of r that a later result keeps in its Previous.
func previousOf(r *Record) *Previous {
	p := &Previous{Status: r.Status, VerifiedAt: r.VerifiedAt}
	if r.Score != nil {
		s := *r.Score
		p.Score = &s
	}
	return p
}

// Validate reports whether r can be written: a key, a known status, a well-formed batch
// id and, for a scored status, a score. The error wraps ErrInvalidRecord.
func (r *Record) Validate() error {
	if r.Key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidRecord)
	}
	if !r.Status.Valid() {
		return fmt.Errorf("%w: key %q: unknown status %q", ErrInvalidRecord, r.Key, r.Status)
	}
	if r.BatchID != "" {
		if err := ValidateBatchID(r.BatchID); err != nil {
			return fmt.Errorf("%w: key %q: %w", ErrInvalidRecord, r.Key, err)
		}
	}
	if r.Status.Scored() && r.Score == nil {
		return fmt.Errorf("%w: key %q: status %s without a score", ErrInvalidRecord, r.Key, r.Status)
	}
	return nil
}

// normalize puts every time of r in UTC, as the contract requires.
func (r *Record) normalize() {
	r.VerifiedAt = r.VerifiedAt.UTC()
	if r.Kairos != nil {
		if !r.Kairos.RequestedAt.IsZero() {
			r.Kairos.RequestedAt = r.Kairos.RequestedAt.UTC()
		}
		if !r.Kairos.ProcessedAt.IsZero() {
			r.Kairos.ProcessedAt = r.Kairos.ProcessedAt.UTC()
		}
	}
	if r.Previous != nil {
		r.Previous.VerifiedAt = r.Previous.VerifiedAt.UTC()
	}
}

// MarshalRecord returns the compact JSON form of r, as stored and exported.
func MarshalRecord(r *Record) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode result %q: %w", r.Key, err)
	}
	return b, nil
}

// UnmarshalRecord parses a record's JSON form. Unknown fields are ignored so that older
// readers accept newer records.
func UnmarshalRecord(b []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode result: %w", err)
	}
	return &r, nil
}
