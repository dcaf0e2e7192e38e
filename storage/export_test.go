package storage

// SetListPageSize makes b's S3 driver ask for n keys per ListObjectsV2 request, so that
// tests cross many pages with few keys. It does nothing for the local driver. Call it
// before b is used.
func SetListPageSize(b *Bucket, n int32) {
	if d, ok := b.drv.(*s3Driver); ok {
		d.pageSize = n
	}
}
