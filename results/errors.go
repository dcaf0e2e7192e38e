package results

import "errors"

// Errors returned by this package. Callers use errors.Is.
var (
	// ErrNotFound: there is no result for the key.
	ErrNotFound = errors.New("results: no result for this key")
	// ErrBatchNotFound: Redis holds nothing for the batch (never created, or expired).
	ErrBatchNotFound = errors.New("results: batch not found")
	// ErrInvalidRecord: a record cannot be written (no key, unknown status, ...).
	ErrInvalidRecord = errors.New("results: invalid record")
	// ErrInvalidBatchID: a batch id is empty, too long or has a character outside
	// ASCII letters, digits and . _ - :
	ErrInvalidBatchID = errors.New("results: invalid batch id")
	// ErrInvalidFormat: an export format other than jsonl or csv.
	ErrInvalidFormat = errors.New("results: unknown export format")
)
