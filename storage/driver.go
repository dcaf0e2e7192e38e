package storage

import (
	"context"
	"io"
	"iter"
)

// driver is the seam between the portable Bucket and one storage service, in the style of
// go-cloud's blob/driver. Bucket checks keys (non-empty, valid UTF-8, no NUL, at most
// MaxKeyLen bytes), prepends its prefix, fills in defaults (a content type), enforces
// GetOptions.MaxBytes and stops readers when their context ends, so a driver sees full
// keys and resolved options. A driver may refuse more keys with an error wrapping
// ErrInvalidKey.
//
// Every driver is safe for concurrent use, and every error it returns names the operation,
// the key and the bucket or directory, and carries no secret. Errors of an operation whose
// context ended wrap ctx.Err().
type driver interface {
	// get opens key for reading. The reader streams: memory does not grow with the object.
	// The returned Attributes hold the full key, the size, the ETag (no quotes), the
	// content type (as stored, or guessed from the key's extension) and the UTC
	// modification time. A missing object gives an error wrapping ErrNotFound. When
	// opts.IfMatch is not empty and differs from the object's ETag, get gives an error
	// wrapping ErrChanged before any content; otherwise the content read is that of the
	// ETag returned.
	get(ctx context.Context, key string, opts GetOptions) (*Reader, error)

	// stat returns the attributes of key, as get would, without the content. A missing
	// object gives an error wrapping ErrNotFound.
	stat(ctx context.Context, key string) (Attributes, error)

	// put stores r's content under key with content type opts.ContentType (never empty).
	// opts.Size > 0 is the exact length (a reader giving another length fails the put);
	// otherwise the length is unknown. put is atomic: readers see the old object or the
	// whole new one, never a part; when put fails, including because ctx ended, no
	// partial object is left behind. Memory does not grow with the object size.
	put(ctx context.Context, key string, r io.Reader, opts PutOptions) error

	// list yields the attributes of every object whose key starts with prefix ("" for
	// all), keys full and in lexical byte order, each once. It fetches lazily (page by
	// page, or directory by directory), so memory does not grow with the number of keys,
	// and stops fetching when the consumer stops. After an error it yields that error once
	// (with zero Attributes) and stops. ContentType may be empty.
	list(ctx context.Context, prefix string) iter.Seq2[Attributes, error]

	// delete removes key. Deleting a missing key is not an error.
	delete(ctx context.Context, key string) error

	// location returns the canonical URL of the storage rooted at prefix ("" or ending
	// in "/"), in a form OpenURL accepts, without any secret. The same storage gives the
	// same string every time.
	location(prefix string) string

	// name returns the bucket name (S3) or the root directory (local).
	name() string

	// close releases the driver's resources (idle connections, directory handles). It is
	// safe to call more than once.
	close() error
}
