package enqueue_test

import (
	"context"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/results"
	"github.com/livenessq/livenessq/storage"
)

// Enqueue every selfie under a storage prefix as one batch. Results written to the same
// bucket, under results/, are not enqueued. Running it again with the same batch id adds
// nothing and reports every task as a duplicate.
func Example_enqueue() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	bucket, err := storage.OpenURL(ctx, "s3://selfies?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true")
	if err != nil {
		log.Fatal(err)
	}
	defer bucket.Close()
	store, err := results.New(results.Config{Redis: rdb, Bucket: bucket.Sub("results")})
	if err != nil {
		log.Fatal(err)
	}
	client, err := enqueue.New(enqueue.Config{Redis: rdb, Batches: store})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	batch := enqueue.Batch{ID: "nightly-2026-11-27", Storage: bucket.URL(), Source: "prefix 2026/", Threshold: 0.7}
	sum, err := client.Enqueue(ctx, batch, enqueue.Prefix(ctx, bucket, "2026/", "results/"), func(p enqueue.Progress) {
		fmt.Printf("%d enqueued, %d already there\n", p.Enqueued, p.Duplicates)
	})
	if err != nil {
		log.Fatal(err) // run it again to resume: nothing is enqueued twice
	}
	fmt.Printf("batch %s: %d enqueued, %d duplicates, %d malformed in %v\n",
		sum.BatchID, sum.Enqueued, sum.Duplicates, sum.Malformed, sum.Duration)

	// One key, for a service that wants a single verification.
	taskID, batchID, err := client.EnqueueOne(ctx, bucket.URL(), "2026/11/27/alice.jpg", 0, "")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(taskID, batchID)
}

// The payload a worker reads: small, versioned JSON, never image bytes.
func ExampleNewVerifyTask() {
	threshold := 0.7
	p := enqueue.Payload{
		Storage:    "s3://selfies?endpoint=http://127.0.0.1:9000&path_style=true&region=us-east-1",
		Key:        "2026/11/27/alice.jpg",
		Threshold:  &threshold,
		BatchID:    "nightly-2026-11-27",
		EnqueuedAt: time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC),
	}
	task, err := enqueue.NewVerifyTask(p)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(task.Type())
	fmt.Println(string(task.Payload()))
	fmt.Println(enqueue.TaskID(p.BatchID, p.Storage, p.Key))

	got, err := enqueue.ParsePayload(task.Payload())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(got.Key, *got.Threshold)

	_, err = enqueue.ParsePayload([]byte(`{"v":1,"key":"a.jpg","threshold":2}`))
	fmt.Println(err)
	// Output:
	// liveness:verify
	// {"v":1,"storage":"s3://selfies?endpoint=http://127.0.0.1:9000&path_style=true&region=us-east-1","key":"2026/11/27/alice.jpg","threshold":0.7,"batch_id":"nightly-2026-11-27","enqueued_at":"2026-11-27T02:00:00Z"}
	// lq-3a5ead3a302684e6d52840f5ef67be87
	// 2026/11/27/alice.jpg 0.7
	// enqueue: bad task payload: threshold must be a number in [0, 1], got 2
}

// A manifest's rows, with the line of each malformed one.
func ExampleManifest() {
	manifest := `key,threshold
alice.jpg,0.8
bob.jpg,

carol.jpg,2
,0.5
dave.jpg,0
`
	for item, err := range enqueue.Manifest(strings.NewReader(manifest), enqueue.ManifestAuto) {
		if err != nil {
			fmt.Println("skipped:", err)
			continue
		}
		if item.Threshold != nil {
			fmt.Printf("line %d: %s (threshold %v)\n", item.Line, item.Key, *item.Threshold)
		} else {
			fmt.Printf("line %d: %s (the batch's threshold)\n", item.Line, item.Key)
		}
	}
	// Output:
	// line 2: alice.jpg (threshold 0.8)
	// line 3: bob.jpg (the batch's threshold)
	// skipped: line 5 (key "carol.jpg"): threshold must be a number in [0, 1], got 2
	// skipped: line 6: missing key
	// line 7: dave.jpg (threshold 0)
}
