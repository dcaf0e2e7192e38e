package results_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/livenessq/livenessq/results"
	"github.com/livenessq/livenessq/storage"
)

// Example records the results of a two-key batch, twice verified, and reads back a
// result, the batch summary and a CSV export. It runs on the in-process Redis that
// `livenessq run` embeds; a worker passes its real Redis client instead.
func Example() {
	ctx := context.Background()
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	dir, err := os.MkdirTemp("", "results-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bucket, err := storage.NewLocal(storage.LocalConfig{Root: dir, Create: true})
	if err != nil {
		log.Fatal(err)
	}
	defer bucket.Close()

	store, err := results.New(results.Config{Redis: rdb, Bucket: bucket})
	if err != nil {
		log.Fatal(err)
	}

	verify := func(batch string, scores map[string]float64) {
		// The enqueuer creates the batch and counts what it enqueued...
		if _, err := store.CreateBatch(ctx, results.BatchInfo{ID: batch, Source: "keys", Threshold: 0.6}); err != nil {
			log.Fatal(err)
		}
		if err := store.AddEnqueued(ctx, batch, int64(len(scores)), 0, 0); err != nil {
			log.Fatal(err)
		}
		if _, err := store.FinishEnqueue(ctx, batch); err != nil {
			log.Fatal(err)
		}
		// ...and workers write one result per task.
		for _, key := range []string{"selfies/a.jpg", "selfies/b.jpg"} {
			score := scores[key]
			live := score >= 0.6
			status := results.StatusNotLive
			if live {
				status = results.StatusLive
			}
			out, err := store.Write(ctx, &results.Record{
				Key: key, Bucket: "selfies", BatchID: batch, Status: status,
				Score: &score, Threshold: 0.6, Live: &live, Faces: 1, Attempts: 1,
				VerifiedAt: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC),
			})
			if err != nil {
				log.Fatal(err)
			}
			if out.Completed {
				fmt.Println("batch", batch, "complete")
			}
		}
	}
	verify("nightly-1", map[string]float64{"selfies/a.jpg": 0.93, "selfies/b.jpg": 0.41})
	verify("nightly-2", map[string]float64{"selfies/a.jpg": 0.35, "selfies/b.jpg": 0.72})

	rec, err := store.Get(ctx, "selfies/a.jpg")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("a.jpg: %s %.2f, previously %s %.2f\n", rec.Status, *rec.Score, rec.Previous.Status, *rec.Previous.Score)

	sum, err := store.Batch(ctx, "nightly-2")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("counts:", sum.Counts, "flips:", sum.Flips)

	if _, err := store.Export(ctx, "nightly-1", results.FormatCSV, os.Stdout); err != nil {
		log.Fatal(err)
	}
	// Unordered output:
	// batch nightly-1 complete
	// batch nightly-2 complete
	// a.jpg: not_live 0.35, previously live 0.93
	// counts: map[live:1 not_live:1] flips: map[live>not_live:1 not_live>live:1]
	// key,bucket,etag,batch_id,status,score,threshold,live,faces,format,width,height,bytes,low_resolution,reason,api_req_uid,request_id,attempts,verified_at,previous_status,previous_score
	// selfies/a.jpg,selfies,,nightly-1,live,0.93,0.6,true,1,,,,,false,,,,1,2026-11-27T12:00:00Z,,
	// selfies/b.jpg,selfies,,nightly-1,not_live,0.41,0.6,false,1,,,,,false,,,,1,2026-11-27T12:00:00Z,,
}
