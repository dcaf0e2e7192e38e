package enqueue

import "errors"

// Errors returned by this package; callers use errors.Is.
var (
	// ErrBadPayload: a task payload cannot be read (not JSON, unknown version, a missing
	// or invalid field). ParsePayload wraps it around every error it returns.
	ErrBadPayload = errors.New("enqueue: bad task payload")
	// ErrBadKey: a key is empty, longer than MaxKeyLen bytes, not valid UTF-8, or holds
	// a NUL byte.
	ErrBadKey = errors.New("invalid key")
	// ErrBadThreshold: a threshold is not a number in [0, 1]. Its message is meant for
	// the user: "threshold must be a number in [0, 1], got 2".
	ErrBadThreshold = errors.New("threshold must be a number in [0, 1]")
	// ErrBadBatch: a batch id is not one results.ValidateBatchID accepts, a storage
	// location is empty or carries credentials, or a callback URL is not an absolute
	// http(s) URL.
	ErrBadBatch = errors.New("invalid batch")
	// ErrBadManifest: a manifest cannot be read at all (e.g. a CSV header without a
	// "key" column, an unknown format). Row-level problems are *RowError instead.
	ErrBadManifest = errors.New("enqueue: bad manifest")
	// ErrClosed is returned by a Client's methods after Close.
	ErrClosed = errors.New("enqueue: client closed")
)
