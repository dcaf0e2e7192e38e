// Package storage is livenessq's portable object storage: one Bucket type over two
// drivers, an S3 driver (aws-sdk-go-v2, for AWS S3 and S3-compatible servers) and a
// local-directory driver (the embedded default), in the style of go-cloud's blob package.
//
// Open a Bucket from a URL:
//
//	s3://bucket[/prefix]?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true
//	s3://bucket?create_bucket=true&ca_bundle=/etc/ssl/private-ca.pem
//	/srv/selfies            (a directory path, relative or absolute)
//	file:///srv/selfies     (the same as a URL; ?create=true makes the directory)
//
// or from a config with NewS3 and NewLocal. S3 credentials come from the SDK's default
// chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and the shared files, web
// identity, container and instance roles), or explicitly from S3Config; they never appear
// in a URL, an error or a log.
//
// A Bucket streams: Get returns a reader, Put consumes one, and List yields keys page by
// page in lexical order, so memory does not grow with object sizes or key counts.
//
// Errors are portable: a missing object is errors.Is(err, ErrNotFound), refused
// credentials or permissions ErrAccessDenied (the message names the bucket), an ETag
// mismatch ErrChanged, an object over Get's byte cap ErrTooLarge, a bad key ErrInvalidKey,
// a missing S3 bucket ErrBucketNotFound (never ErrNotFound).
// Errors of an operation stopped by its context also match ctx.Err(). Provider error types
// never reach callers; the provider's message is kept in the error text.
//
// The conformance suite in storage/storagetest runs against both drivers.
package storage
