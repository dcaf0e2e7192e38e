package storage_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/internal/testenv"
	"github.com/livenessq/livenessq/storage"
	"github.com/livenessq/livenessq/storage/storagetest"
)

// TestConformance runs the conformance suite against the local-directory driver, then
// against the S3 driver on the test versitygw; within each, the tests run in parallel.
// TestConformance itself is not parallel, so that the rest of the package's tests (all
// parallel) wait for it: the suite's memory measurement, which reads the process's heap
// statistics, then shares the process with nothing but the suite's own tests, which it
// locks out while it measures.
func TestConformance(t *testing.T) {
	t.Run("local", func(t *testing.T) {
		t.Logf("conformance suite against the local-directory driver")
		storagetest.Run(t, newLocalBucket)
	})
	t.Run("s3", func(t *testing.T) {
		srv := testenv.S3Server(t)
		t.Logf("conformance suite against the S3 driver on versitygw at %s", srv.Endpoint)
		storagetest.Run(t, newS3Bucket)
	})
	t.Run("s3-sdk-only", func(t *testing.T) {
		srv := testenv.S3Server(t)
		t.Logf("conformance suite against the S3 driver without its fast path (every request through the SDK) on versitygw at %s", srv.Endpoint)
		storagetest.Run(t, func(t *testing.T) *storage.Bucket {
			b := newS3Bucket(t)
			storage.DisableFastPath(b)
			return b
		})
	})
}

// newLocalBucket returns a Bucket over a new temporary directory.
func newLocalBucket(t *testing.T) *storage.Bucket {
	t.Helper()
	b, err := storage.NewLocal(storage.LocalConfig{Root: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	return b
}

// newS3Bucket returns a Bucket over a new bucket of the test S3 server, listing 100 keys
// a page; the bucket is emptied and removed when the test ends.
func newS3Bucket(t *testing.T) *storage.Bucket {
	t.Helper()
	srv := testenv.S3Server(t)
	name := testenv.BucketName(t)
	b, err := storage.NewS3(context.Background(), s3Config(srv, name))
	require.NoError(t, err)
	storage.SetListPageSize(b, 100)
	t.Cleanup(func() {
		require.NoError(t, b.Close())
		removeBucket(t, srv, name)
	})
	return b
}

// s3Config is the configuration of a new bucket on the test server.
func s3Config(srv testenv.S3, bucket string) storage.S3Config {
	return storage.S3Config{
		Bucket:       bucket,
		Endpoint:     srv.Endpoint,
		Region:       srv.Region,
		PathStyle:    true,
		AccessKey:    srv.AccessKey,
		SecretKey:    srv.SecretKey,
		CreateBucket: true,
	}
}

// removeBucket empties and deletes a bucket of the test server, with the SDK directly.
func removeBucket(t *testing.T, srv testenv.S3, bucket string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, done := srv.Client()
	defer done()
	pages := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			t.Logf("cleanup: list bucket %s: %v", bucket, err)
			return
		}
		if len(page.Contents) == 0 {
			continue
		}
		ids := make([]types.ObjectIdentifier, len(page.Contents))
		for i, o := range page.Contents {
			ids[i] = types.ObjectIdentifier{Key: o.Key}
		}
		if _, err := client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
			Bucket: aws.String(bucket),
			Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)},
		}); err != nil {
			t.Logf("cleanup: delete objects of bucket %s: %v", bucket, err)
			return
		}
	}
	if _, err := client.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Logf("cleanup: delete bucket %s: %v", bucket, err)
	}
}
