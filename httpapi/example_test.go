package httpapi_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/httpapi"
	"github.com/livenessq/livenessq/results"
	"github.com/livenessq/livenessq/storage"
)

// A receiver of completion callbacks checks the signature on the raw body before
// trusting it.
func ExampleVerifySignature() {
	secret := []byte("the LIVENESSQ_WEBHOOK_SECRET")
	handler := func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil || !httpapi.VerifySignature(secret, body, r.Header.Get(httpapi.SignatureHeader)) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		// Parse body as httpapi.WebhookPayload; deduplicate on r.Header.Get(httpapi.BatchHeader).
		w.WriteHeader(http.StatusNoContent)
	}
	_ = handler

	body := []byte(`{"event":"batch.completed","batch":{"batch_id":"b1"}}`)
	sig := httpapi.Sign(secret, body)
	fmt.Println(httpapi.VerifySignature(secret, body, sig))
	fmt.Println(httpapi.VerifySignature([]byte("another secret"), body, sig))
	// Output:
	// true
	// false
}

// Tokens are parsed from LIVENESSQ_API_TOKENS; only their names are ever shown.
func ExampleParseTokens() {
	tokens, err := httpapi.ParseTokens("ci:3f9a1c0d5e7b2a4c,billing:77c1e0b9a8d6f5e4")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(tokens.Names())
	name, ok := tokens.Authenticate("Bearer 77c1e0b9a8d6f5e4")
	fmt.Println(name, ok)
	_, ok = tokens.Authenticate("Bearer 77c1e0b9a8d6f5e5")
	fmt.Println(ok)

	_, err = httpapi.ParseTokens("ci:short")
	fmt.Println(err)
	// Output:
	// [ci billing]
	// billing true
	// false
	// httpapi: invalid API tokens: entry 1 (name "ci"): token shorter than 16 characters
}

// Keys are checked before anything is queued: nothing may step out of the storage.
func ExampleCheckKey() {
	for _, k := range []string{"selfies/2026/u-1.jpg", "selfies/../secrets.json", ""} {
		fmt.Printf("%q: %v\n", k, httpapi.CheckKey(k))
	}
	// Output:
	// "selfies/2026/u-1.jpg": <nil>
	// "selfies/../secrets.json": invalid key: a key must not have a ".." segment
	// "": invalid key: empty key
}

// Serving the API and delivering its callbacks, as `livenessq serve` does.
func Example_serve() {
	ctx := context.Background()
	log := zerolog.New(os.Stderr)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	selfies, _ := storage.OpenURL(ctx, "s3://selfies?region=eu-west-1")
	store, _ := results.New(results.Config{Redis: rdb, Bucket: selfies.Sub("results/"), Logger: log})
	eq, _ := enqueue.New(enqueue.Config{Redis: rdb, Batches: store, Logger: log})
	tokens, _ := httpapi.ParseTokens(os.Getenv("LIVENESSQ_API_TOKENS"))
	secret := []byte(os.Getenv("LIVENESSQ_WEBHOOK_SECRET"))

	srv, err := httpapi.New(httpapi.Config{
		Enqueue: eq, Results: store, Redis: rdb, Storage: selfies, SkipPrefixes: []string{"results/"},
		Tokens: tokens, WebhookSecret: secret, Addr: ":8080", Logger: log,
	})
	if err != nil {
		panic(err)
	}
	d, err := httpapi.NewDispatcher(httpapi.DispatcherConfig{Redis: rdb, Results: store, Secret: secret, Logger: log})
	if err != nil {
		panic(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	go d.Run(runCtx)
	if err := srv.Start(ctx); err != nil {
		panic(err)
	}
	// ... until a signal:
	stop()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
}
