package storage

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// Errors every driver translates its provider's errors into. Callers use errors.Is.
var (
	// ErrNotFound: the object does not exist.
	ErrNotFound = errors.New("storage: object not found")
	// ErrAccessDenied: the credentials were refused or lack permission on the bucket.
	ErrAccessDenied = errors.New("storage: access denied")
	// ErrTooLarge: the object is larger than the byte cap given to Get.
	ErrTooLarge = errors.New("storage: object larger than the size cap")
	// ErrInvalidKey: the key is empty, too long, or tries to escape the root.
	ErrInvalidKey = errors.New("storage: invalid key")
	// ErrChanged: the object no longer matches the ETag the caller asked for.
	ErrChanged = errors.New("storage: object changed")
	// ErrBucketNotFound: the bucket (S3) does not exist. It is not ErrNotFound, so that a
	// misconfigured storage is never mistaken for a missing object.
	ErrBucketNotFound = errors.New("storage: bucket not found")
)

// Attributes describe one stored object.
type Attributes struct {
	Key         string    // the key relative to the bucket's prefix
	Size        int64     // bytes
	ETag        string    // opaque version tag, without quotes; changes when the content does
	ContentType string    // as stored, or guessed from the key's extension; may be empty
	ModTime     time.Time // last modification, UTC
}

// Reader streams one object's content. Close it when done.
type Reader struct {
	io.ReadCloser
	Attributes
}

// GetOptions vary one Get call.
type GetOptions struct {
	// MaxBytes, when > 0, makes Get fail with ErrTooLarge for an object larger than this
	// (checked before any content is read when the size is known up front, and again
	// while reading).
	MaxBytes int64
	// IfMatch, when set, makes Get fail with ErrChanged when the object's ETag differs.
	IfMatch string
}

// PutOptions vary one Put call.
type PutOptions struct {
	ContentType string // default: guessed from the key's extension, else application/octet-stream
	// Size, when > 0, is the exact length of the content: drivers stream it without
	// buffering, and a reader that gives fewer or more bytes fails the Put. 0 or -1 means
	// unknown (an empty object needs no size).
	Size int64
}

// MaxKeyLen is the longest key, in bytes, that a Bucket accepts (S3's limit). It counts
// the Bucket's prefix too.
const MaxKeyLen = 1024

// tempPrefix starts the name of the local driver's temporary files; no key segment may
// start with it.
const tempPrefix = ".livenessq-tmp-"

// ValidateKey returns nil for a key that every driver accepts, and otherwise an error
// wrapping ErrInvalidKey that says what is wrong. Such a key is non-empty, at most
// MaxKeyLen bytes of valid UTF-8 without NUL, and a relative slash-separated path: no
// leading or trailing "/", no empty, "." or ".." segment, no segment longer than 255
// bytes or starting with ".livenessq-tmp-". A Bucket itself is less strict on S3, which
// accepts keys such as "a//b" that a local directory cannot hold.
func ValidateKey(key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	return checkPathKey(key)
}

// checkKey applies the rules that hold for every driver.
func checkKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%w: key is %d bytes, longer than %d", ErrInvalidKey, len(key), MaxKeyLen)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: key %q is not valid UTF-8", ErrInvalidKey, key)
	case strings.IndexByte(key, 0) >= 0:
		return fmt.Errorf("%w: key %q contains a NUL byte", ErrInvalidKey, key)
	}
	return nil
}

// checkPathKey applies the rules of a key that names a file under a directory: a
// relative path that cannot leave the directory.
func checkPathKey(key string) error {
	if strings.HasPrefix(key, "/") {
		return fmt.Errorf("%w: key %q is an absolute path", ErrInvalidKey, key)
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("%w: key %q has an empty path segment", ErrInvalidKey, key)
		case seg == "." || seg == "..":
			return fmt.Errorf("%w: key %q has a %q segment (it would leave its directory)", ErrInvalidKey, key, seg)
		case len(seg) > 255:
			return fmt.Errorf("%w: key %q has a segment longer than 255 bytes", ErrInvalidKey, key)
		case strings.HasPrefix(seg, tempPrefix):
			return fmt.Errorf("%w: key %q has a segment starting with the reserved %q", ErrInvalidKey, key, tempPrefix)
		}
	}
	return nil
}
