package main

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/livenessq/livenessq/httpapi"
	"github.com/livenessq/livenessq/results"
)

// minWebhookSecretLen is the shortest LIVENESSQ_WEBHOOK_SECRET accepted.
const minWebhookSecretLen = 16

// webhookConfig says how a process delivers completion callbacks.
type webhookConfig struct {
	// secret signs the callbacks (LIVENESSQ_WEBHOOK_SECRET); empty: none are delivered.
	secret string
	// allowPrivate lets callbacks reach loopback, private and link-local addresses.
	allowPrivate bool
	// timeout is the time a receiver has to answer one callback; 0:
	// httpapi.DefaultWebhookTimeout.
	timeout time.Duration
	// attempts are the deliveries of a callback before it is failed; 0:
	// httpapi.DefaultWebhookAttempts.
	attempts int
}

// webhookSecret reads LIVENESSQ_WEBHOOK_SECRET: empty (no callbacks), or at least
// minWebhookSecretLen characters.
func webhookSecret(env *environ) (string, error) {
	secret := env.getenv("LIVENESSQ_WEBHOOK_SECRET")
	if secret != "" && len(secret) < minWebhookSecretLen {
		return "", usagef("LIVENESSQ_WEBHOOK_SECRET: must be at least %d characters", minWebhookSecretLen)
	}
	return secret, nil
}

// webhookEnv reads a worker's callback settings, which come from the environment only:
// LIVENESSQ_WEBHOOK_SECRET and LIVENESSQ_WEBHOOK_ALLOW_PRIVATE.
func webhookEnv(env *environ) (webhookConfig, error) {
	secret, err := webhookSecret(env)
	if err != nil || secret == "" {
		return webhookConfig{}, err
	}
	cfg := webhookConfig{secret: secret}
	if v := env.getenv("LIVENESSQ_WEBHOOK_ALLOW_PRIVATE"); v != "" {
		if cfg.allowPrivate, err = strconv.ParseBool(v); err != nil {
			return webhookConfig{}, usagef("LIVENESSQ_WEBHOOK_ALLOW_PRIVATE: %q is not true or false", v)
		}
	}
	return cfg, nil
}

// startWebhooks runs the completion-callback Dispatcher in this process when cfg has a
// secret. `serve` does, and so do workers, so that the callbacks of batches enqueued with
// --callback-url are delivered even where no `serve` runs. Any number of dispatchers is
// safe: each delivery is claimed in Redis. stop ends it and waits; calling it again is
// safe.
func startWebhooks(ctx context.Context, rdb redis.UniversalClient, store *results.Store, cfg webhookConfig, log zerolog.Logger) (stop func(), err error) {
	if cfg.secret == "" {
		return func() {}, nil
	}
	d, err := httpapi.NewDispatcher(httpapi.DispatcherConfig{Redis: rdb, Results: store, Secret: []byte(cfg.secret),
		AllowPrivate: cfg.allowPrivate, Timeout: cfg.timeout, MaxAttempts: cfg.attempts, Logger: log})
	if err != nil {
		return nil, usagef("webhooks: %v", err)
	}
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { _ = d.Run(dctx) })
	return func() { cancel(); wg.Wait() }, nil
}
