package storage

import (
	"context"
	"fmt"
	"io"
	"iter"
	"mime"
	"path"
	"strings"
	"sync"
)

// Bucket is a portable handle on one storage location: an S3 bucket (optionally under a
// key prefix) or a local directory. Keys are slash-separated and relative to the
// Bucket's prefix. A Bucket is safe for concurrent use. Make one with OpenURL, NewS3 or
// NewLocal, derive views with Sub, and Close the original when done.
type Bucket struct {
	drv    driver
	prefix string // "" or ending in "/"
	owner  bool   // Close releases drv (false for Sub views)
	once   *sync.Once
}

// newBucket wraps drv, rooted at prefix.
func newBucket(drv driver, prefix string) *Bucket {
	return &Bucket{drv: drv, prefix: dirPrefix(prefix), owner: true, once: new(sync.Once)}
}

// dirPrefix returns p with one trailing "/" when it is not empty.
func dirPrefix(p string) string {
	if p == "" || strings.HasSuffix(p, "/") {
		return p
	}
	return p + "/"
}

// fullKey checks key and returns it under b's prefix.
func (b *Bucket) fullKey(key string) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	full := b.prefix + key
	if len(full) > MaxKeyLen {
		return "", fmt.Errorf("%w: key %q with the bucket's prefix is %d bytes, longer than %d",
			ErrInvalidKey, key, len(full), MaxKeyLen)
	}
	return full, nil
}

// relative turns a driver's attributes (full key) into the caller's (key under prefix).
func (b *Bucket) relative(a Attributes) Attributes {
	a.Key = strings.TrimPrefix(a.Key, b.prefix)
	return a
}

// Get opens the object at key for streaming. The Reader carries the object's size, ETag,
// content type and modification time; close it when done. Reading stops with an error
// wrapping ctx.Err() once ctx ends.
//
// A missing object gives an error wrapping ErrNotFound. With opts.IfMatch set, an object
// whose ETag differs gives ErrChanged. With opts.MaxBytes > 0, an object larger than that
// gives ErrTooLarge before any content is read, and the reader fails with ErrTooLarge
// rather than return more than MaxBytes bytes. opts may be nil.
func (b *Bucket) Get(ctx context.Context, key string, opts *GetOptions) (*Reader, error) {
	full, err := b.fullKey(key)
	if err != nil {
		return nil, err
	}
	var o GetOptions
	if opts != nil {
		o = *opts
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storage: get %q: %w", full, err)
	}
	r, err := b.drv.get(ctx, full, o)
	if err != nil {
		return nil, err
	}
	if o.MaxBytes > 0 && r.Size > o.MaxBytes {
		r.Close()
		return nil, fmt.Errorf("storage: get %q from %s: %w (%d bytes, the cap is %d)",
			full, b.where(), ErrTooLarge, r.Size, o.MaxBytes)
	}
	r.ReadCloser = newGuardedReader(ctx, r.ReadCloser, full, o.MaxBytes)
	r.Attributes = b.relative(r.Attributes)
	return r, nil
}

// Stat returns the attributes of the object at key. A missing object gives an error
// wrapping ErrNotFound.
func (b *Bucket) Stat(ctx context.Context, key string) (Attributes, error) {
	full, err := b.fullKey(key)
	if err != nil {
		return Attributes{}, err
	}
	if err := ctx.Err(); err != nil {
		return Attributes{}, fmt.Errorf("storage: stat %q: %w", full, err)
	}
	a, err := b.drv.stat(ctx, full)
	if err != nil {
		return Attributes{}, err
	}
	return b.relative(a), nil
}

// Put stores r's content at key, replacing any object there. It streams: memory does not
// grow with the content. It is atomic: readers see the old object or the whole new one;
// when Put fails (including because ctx ended, with an error wrapping ctx.Err()), the
// old object, if any, is left as it was. opts may be nil (content type guessed from the
// key's extension, size unknown); see PutOptions.
func (b *Bucket) Put(ctx context.Context, key string, r io.Reader, opts *PutOptions) error {
	full, err := b.fullKey(key)
	if err != nil {
		return err
	}
	o := PutOptions{Size: -1}
	if opts != nil {
		o = *opts
	}
	if o.Size <= 0 {
		o.Size = -1
	}
	if o.ContentType == "" {
		o.ContentType = guessContentType(key)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: put %q: %w", full, err)
	}
	return b.drv.put(ctx, full, r, o)
}

// List yields the attributes of every object whose key starts with prefix ("" for all),
// in lexical byte order of keys, with keys relative to the Bucket. It streams page by
// page and never holds all keys; stopping the loop stops the listing. On an error it
// yields the error once, with zero Attributes, and stops. Attributes.ContentType may be
// empty in listings.
func (b *Bucket) List(ctx context.Context, prefix string) iter.Seq2[Attributes, error] {
	return func(yield func(Attributes, error) bool) {
		full, err := b.listPrefix(ctx, prefix)
		if err != nil {
			yield(Attributes{}, err)
			return
		}
		for a, err := range b.drv.list(ctx, full) {
			if err != nil {
				yield(Attributes{}, err)
				return
			}
			if !yield(b.relative(a), nil) {
				return
			}
		}
	}
}

// listPrefix checks a listing's prefix and ctx, and returns the prefix in the driver's
// terms (the view's prefix prepended).
func (b *Bucket) listPrefix(ctx context.Context, prefix string) (string, error) {
	full := b.prefix + prefix
	if prefix != "" {
		if err := checkKey(prefix); err != nil {
			return "", fmt.Errorf("storage: list prefix %q: %w", prefix, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("storage: list prefix %q: %w", full, err)
	}
	return full, nil
}

// Delete removes the object at key. Deleting a missing key is not an error.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	full, err := b.fullKey(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: delete %q: %w", full, err)
	}
	return b.drv.delete(ctx, full)
}

// Sub returns a view of b whose keys are relative to prefix, a directory-like key prefix
// ("results" and "results/" are the same: a "/" is added when missing). The view shares
// b's connections; closing it does nothing, closing b ends both. Sub("") is b's own view.
func (b *Bucket) Sub(prefix string) *Bucket {
	return &Bucket{drv: b.drv, prefix: b.prefix + dirPrefix(prefix), once: new(sync.Once)}
}

// URL returns the canonical URL of the Bucket's location, in a form OpenURL accepts and
// without any secret: "s3://bucket/prefix?endpoint=…&region=…&path_style=true" or
// "file:///dir/prefix". The same storage always gives the same string.
func (b *Bucket) URL() string { return b.drv.location(b.prefix) }

// Name returns the bucket name (S3) or the absolute root directory (local), without the
// prefix.
func (b *Bucket) Name() string { return b.drv.name() }

// Close releases the resources of a Bucket made by OpenURL, NewS3 or NewLocal (idle
// connections, the directory handle); the Bucket and its Sub views must not be used
// afterwards. Closing a Sub view does nothing. Close is safe to call more than once.
func (b *Bucket) Close() error {
	if !b.owner {
		return nil
	}
	var err error
	b.once.Do(func() { err = b.drv.close() })
	return err
}

// where names the storage in error messages.
func (b *Bucket) where() string {
	if _, ok := b.drv.(*localDriver); ok {
		return fmt.Sprintf("local dir %q", b.drv.name())
	}
	return fmt.Sprintf("s3 bucket %q", b.drv.name())
}

// guessContentType returns the MIME type of key's extension, or
// application/octet-stream.
func guessContentType(key string) string {
	if t := mime.TypeByExtension(strings.ToLower(path.Ext(key))); t != "" {
		return t
	}
	return "application/octet-stream"
}
