package httpapi

import (
	"strconv"
	"time"

	"github.com/livenessq/livenessq/results"
)

// Callback delivery states, as BatchView.Callback.State shows them.
const (
	CallbackPending    = "pending"    // waiting for the batch to complete, or for the next attempt
	CallbackDelivering = "delivering" // a Dispatcher is sending it
	CallbackDelivered  = "delivered"  // the receiver answered 2xx
	CallbackFailed     = "failed"     // every attempt failed; it will not be sent again
)

// Fields of a batch's meta hash (results.BatchMetaKey) that this package keeps, next to
// results.FieldCallbackState and results.FieldCallbackAttempts. Times are Unix
// milliseconds of Redis's clock.
const (
	fieldCallbackLeaseUntil  = "callback_lease_until"
	fieldCallbackOwner       = "callback_owner"
	fieldCallbackNextAt      = "callback_next_at"
	fieldCallbackLastAt      = "callback_last_attempt_at"
	fieldCallbackLastStatus  = "callback_last_status"
	fieldCallbackLastError   = "callback_last_error"
	fieldCallbackDeliveredAt = "callback_delivered_at"
	// fieldEnqueueError says why a background prefix listing stopped early.
	fieldEnqueueError = "enqueue_error"
)

// BatchView is a batch's summary as the API shows it (GET /v1/batches/{id}) and as the
// completion callback sends it.
type BatchView struct {
	BatchID string `json:"batch_id"`
	// Source says what was enqueued, e.g. "api ci: prefix selfies/".
	Source    string    `json:"source,omitempty"`
	Threshold float64   `json:"threshold"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// Enqueued counts tasks queued; Duplicates, keys already queued in this batch;
	// Malformed, source rows that could not be queued.
	Enqueued   int64 `json:"enqueued"`
	Duplicates int64 `json:"duplicates"`
	Malformed  int64 `json:"malformed"`
	// EnqueueDone is true once the whole source is queued; EnqueueError says why a
	// background listing stopped before.
	EnqueueDone  bool   `json:"enqueue_done"`
	EnqueueError string `json:"enqueue_error,omitempty"`
	// Done counts results; Counts splits them by status.
	Done   int64            `json:"done"`
	Counts map[string]int64 `json:"counts"`
	// Histogram counts scored results in 20 bins: bin i holds scores in [i/20, (i+1)/20),
	// the last bin 1.0 too.
	Histogram [results.HistogramBins]int64 `json:"histogram"`
	// Flips counts keys whose status changed from their previous result ("live>not_live").
	Flips map[string]int64 `json:"flips"`
	// Progress is Done/Enqueued in [0, 1]; Complete is true when every queued task has
	// its result and the source is fully queued.
	Progress float64 `json:"progress"`
	Complete bool    `json:"complete"`
	// Callback is the completion callback's delivery state; absent without a callback.
	Callback *CallbackView `json:"callback,omitempty"`
}

// CallbackView is the delivery state of a batch's completion callback.
type CallbackView struct {
	URL string `json:"url"`
	// State is CallbackPending, CallbackDelivering, CallbackDelivered or CallbackFailed.
	State string `json:"state"`
	// Attempts counts the deliveries started, the current one included.
	Attempts int64 `json:"attempts"`
	// LastStatus is the HTTP status of the last answer (0: none, e.g. a network error);
	// LastError says what went wrong with the last failed attempt.
	LastStatus    int       `json:"last_status,omitempty"`
	LastError     string    `json:"last_error,omitempty"`
	LastAttemptAt time.Time `json:"last_attempt_at,omitzero"`
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
	DeliveredAt   time.Time `json:"delivered_at,omitzero"`
}

// NewBatchView returns the API's view of a batch summary.
func NewBatchView(s *results.BatchSummary) *BatchView {
	v := &BatchView{
		BatchID:      s.Info.ID,
		Source:       s.Info.Source,
		Threshold:    s.Info.Threshold,
		CreatedAt:    s.Info.CreatedAt,
		UpdatedAt:    s.UpdatedAt,
		Enqueued:     s.Enqueued,
		Duplicates:   s.Duplicates,
		Malformed:    s.Malformed,
		EnqueueDone:  s.EnqueueDone,
		EnqueueError: s.Info.Extra[fieldEnqueueError],
		Done:         s.Done,
		Counts:       make(map[string]int64, len(s.Counts)),
		Histogram:    s.Histogram,
		Flips:        s.Flips,
		Progress:     s.Progress,
		Complete:     s.Complete,
	}
	if v.Flips == nil {
		v.Flips = map[string]int64{}
	}
	for st, n := range s.Counts {
		v.Counts[string(st)] = n
	}
	if s.Info.CallbackURL != "" {
		x := s.Info.Extra
		c := &CallbackView{
			URL:           s.Info.CallbackURL,
			State:         s.Info.CallbackState,
			Attempts:      s.Info.CallbackAttempts,
			LastError:     x[fieldCallbackLastError],
			LastAttemptAt: msTime(x[fieldCallbackLastAt]),
			DeliveredAt:   msTime(x[fieldCallbackDeliveredAt]),
		}
		c.LastStatus, _ = strconv.Atoi(x[fieldCallbackLastStatus])
		if c.State == "" {
			c.State = CallbackPending
		}
		if c.State == CallbackPending {
			c.NextAttemptAt = msTime(x[fieldCallbackNextAt])
		}
		v.Callback = c
	}
	return v
}

// msTime reads Unix milliseconds; the zero time for an empty or bad value.
func msTime(s string) time.Time {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}
