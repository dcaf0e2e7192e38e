package storage

// SetListPageSize makes b's S3 driver ask for n keys per ListObjectsV2 request, so that
// tests cross many pages with few keys. It does nothing for the local driver. Call it
// before b is used.
func SetListPageSize(b *Bucket, n int32) {
	if d, ok := b.drv.(*s3Driver); ok {
		d.pageSize = n
	}
}

// FastPathURL returns the URL the S3 driver's fast path sends a request for key to, or ""
// when b does not use the fast path (see s3Fast).
func FastPathURL(b *Bucket, key string) string {
	if d, ok := b.drv.(*s3Driver); ok && d.fast != nil {
		return d.fast.url(key).String()
	}
	return ""
}

// DisableFastPath makes b's S3 driver send every request through the SDK. Call it before
// b is used.
func DisableFastPath(b *Bucket) {
	if d, ok := b.drv.(*s3Driver); ok {
		d.fast = nil
	}
}
