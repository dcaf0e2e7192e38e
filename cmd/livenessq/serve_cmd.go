package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/httpapi"
)

func init() {
	register(&command{name: "serve", summary: "serve the HTTP API for other services (/v1/…) and deliver completion callbacks", run: runServe})
}

// serveFlags are the settings of `livenessq serve`. The tokens and the webhook secret
// come from the environment only, never from flags (which other users may see in ps).
type serveFlags struct {
	httpAddr        string
	threshold       float64
	rate            int
	burst           int
	maxBody         byteSize
	maxKeysBody     byteSize
	maxWait         time.Duration
	allowPrivate    bool
	webhooks        bool
	webhookAttempts int
	webhookTimeout  time.Duration
	shutdownTimeout time.Duration
}

func (f *serveFlags) register(fs *flagSet) {
	f.maxBody, f.maxKeysBody = httpapi.DefaultMaxBodyBytes, httpapi.DefaultMaxKeysBodyBytes
	fs.StringVar(&f.httpAddr, "http-addr", httpapi.DefaultAddr, "where the API listens")
	fs.bindEnv("http-addr", "LIVENESSQ_HTTP_ADDR")
	fs.Float64Var(&f.threshold, "threshold", enqueue.DefaultThreshold, "liveness threshold in (0, 1] for requests that give none")
	fs.bindEnv("threshold", "LIVENESSQ_THRESHOLD")
	fs.IntVar(&f.rate, "api-rate", httpapi.DefaultRateLimit, "requests a second each API token may make, across every serve process; 0 = no limit")
	fs.bindEnv("api-rate", "LIVENESSQ_API_RATE")
	fs.IntVar(&f.burst, "api-burst", 0, "requests a token may make back to back; 0 = twice --api-rate")
	fs.bindEnv("api-burst", "LIVENESSQ_API_BURST")
	fs.Var(&f.maxBody, "max-body", "largest JSON request body, in bytes (suffixes KiB, MiB allowed)")
	fs.bindEnv("max-body", "LIVENESSQ_API_MAX_BODY")
	fs.Var(&f.maxKeysBody, "max-keys-body", "largest JSONL body of keys (POST /v1/batches), in bytes; held in memory while checked")
	fs.bindEnv("max-keys-body", "LIVENESSQ_API_MAX_KEYS_BODY")
	fs.DurationVar(&f.maxWait, "max-wait", httpapi.DefaultMaxWait, "cap on ?wait of POST /v1/verifications")
	fs.bindEnv("max-wait", "LIVENESSQ_API_MAX_WAIT")
	fs.BoolVar(&f.allowPrivate, "webhook-allow-private", false, "let callback URLs reach loopback, private and link-local addresses (local setups only)")
	fs.bindEnv("webhook-allow-private", "LIVENESSQ_WEBHOOK_ALLOW_PRIVATE")
	fs.BoolVar(&f.webhooks, "webhooks", true, "deliver completion callbacks from this process (any number of processes may; each callback is sent once)")
	fs.bindEnv("webhooks", "LIVENESSQ_WEBHOOKS")
	fs.IntVar(&f.webhookAttempts, "webhook-attempts", httpapi.DefaultWebhookAttempts, "delivery attempts of a callback before it is failed")
	fs.bindEnv("webhook-attempts", "LIVENESSQ_WEBHOOK_ATTEMPTS")
	fs.DurationVar(&f.webhookTimeout, "webhook-timeout", httpapi.DefaultWebhookTimeout, "time a receiver has to answer one callback")
	fs.bindEnv("webhook-timeout", "LIVENESSQ_WEBHOOK_TIMEOUT")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long requests and background listings may finish after SIGINT/SIGTERM")
	fs.bindEnv("shutdown-timeout", "LIVENESSQ_SHUTDOWN_TIMEOUT")
}

func (f *serveFlags) validate() error {
	if err := checkThreshold(f.threshold); err != nil {
		return err
	}
	switch {
	case f.httpAddr == "":
		return usagef("--http-addr: an address is required, e.g. :8080")
	case f.rate < 0:
		return usagef("--api-rate: must be ≥ 0 (0 = no limit), got %d", f.rate)
	case f.burst < 0:
		return usagef("--api-burst: must be ≥ 0, got %d", f.burst)
	case f.maxBody <= 0:
		return usagef("--max-body: must be positive, got %d", f.maxBody)
	case f.maxKeysBody <= 0:
		return usagef("--max-keys-body: must be positive, got %d", f.maxKeysBody)
	case f.maxWait <= 0:
		return usagef("--max-wait: must be positive, got %v", f.maxWait)
	case f.webhookAttempts < 1:
		return usagef("--webhook-attempts: must be at least 1, got %d", f.webhookAttempts)
	case f.webhookTimeout <= 0:
		return usagef("--webhook-timeout: must be positive, got %v", f.webhookTimeout)
	case f.shutdownTimeout < 0:
		return usagef("--shutdown-timeout: must not be negative, got %v", f.shutdownTimeout)
	}
	return nil
}

func runServe(ctx context.Context, env *environ, args []string) error {
	var c common
	var f serveFlags
	fs := newFlagSet(env, "serve", "[flags]   (tokens in $LIVENESSQ_API_TOKENS, the callback signing key in $LIVENESSQ_WEBHOOK_SECRET)")
	c.registerConnection(fs)
	f.register(fs)
	c.registerLogging(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("serve: unexpected arguments %q", fs.Args())
	}
	if err := f.validate(); err != nil {
		return err
	}
	if strings.Contains(c.queue, ",") {
		return usagef("--queue: serve enqueues to one queue, got %q", c.queue)
	}
	tokens, err := httpapi.ParseTokens(env.getenv("LIVENESSQ_API_TOKENS"))
	if err != nil {
		return usagef("LIVENESSQ_API_TOKENS: %v", err)
	}
	secret, err := webhookSecret(env)
	if err != nil {
		return err
	}
	logger, err := c.logger(env.stderr)
	if err != nil {
		return err
	}

	cn, err := c.open(ctx, logger, false)
	if err != nil {
		return err
	}
	defer cn.close()
	rdb, src, res, store := cn.rdb, cn.src, cn.res, cn.store
	eq, err := enqueue.New(enqueue.Config{Redis: rdb, Batches: store, Queue: c.queue, Logger: logger})
	if err != nil {
		return usagef("serve: %v", err)
	}
	defer eq.Close()
	var skip []string
	if c.resultsURL == "" {
		skip = []string{DefaultResultsPrefix} // results live under the storage root
	}
	rate := f.rate
	if rate == 0 {
		rate = -1 // no limit
	}
	srv, err := httpapi.New(httpapi.Config{
		Enqueue: eq, Results: store, Redis: rdb, Storage: src, SkipPrefixes: skip, Queue: c.queue,
		Tokens: tokens, Threshold: f.threshold, RateLimit: rate, RateBurst: f.burst,
		MaxBodyBytes: int64(f.maxBody), MaxKeysBodyBytes: int64(f.maxKeysBody), MaxWait: f.maxWait,
		WebhookSecret: []byte(secret), AllowPrivateCallbacks: f.allowPrivate,
		Addr: f.httpAddr, Logger: logger,
	})
	if err != nil {
		return usagef("serve: %v", err)
	}

	// The Dispatcher delivers the callbacks of every batch, whoever created it.
	wh := webhookConfig{allowPrivate: f.allowPrivate, timeout: f.webhookTimeout, attempts: f.webhookAttempts}
	if f.webhooks {
		wh.secret = secret // none when secret is empty
	}
	if secret == "" {
		logger.Warn().Msg("LIVENESSQ_WEBHOOK_SECRET is not set: requests with a callback_url are refused and no callbacks are delivered")
	}
	stopWebhooks, err := startWebhooks(ctx, rdb, store, wh, logger)
	if err != nil {
		return err
	}
	if f.allowPrivate {
		logger.Warn().Msg("callbacks may reach loopback and private addresses (LIVENESSQ_WEBHOOK_ALLOW_PRIVATE)")
	}

	if err := srv.Start(ctx); err != nil {
		stopWebhooks()
		return usagef("--http-addr: %v", err)
	}
	logger.Info().Str("redis", redactedURL(c.redisURL)).Str("storage", src.URL()).Str("results", res.URL()).
		Str("queue", c.queue).Int("api_rate", f.rate).Bool("webhooks", wh.secret != "").Msg("serve started")

	<-ctx.Done()
	logger.Info().Msg("stopping: finishing requests in flight")
	sctx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
	defer cancel()
	serr := srv.Shutdown(sctx)
	stopWebhooks()
	if serr != nil {
		return fmt.Errorf("serve: shutdown: %w", serr)
	}
	logger.Info().Msg("serve exited")
	return nil
}
