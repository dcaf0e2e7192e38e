package main

import (
	"context"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/livenessq/livenessq/httpapi"
	"github.com/livenessq/livenessq/results"
)

// startWebhooks runs the completion-callback Dispatcher in this process when
// LIVENESSQ_WEBHOOK_SECRET is set, so that workers deliver the callbacks of batches
// enqueued with --callback-url even where no `serve` runs. Any number of dispatchers is
// safe: each delivery is claimed in Redis. stop ends it and waits.
func startWebhooks(ctx context.Context, env *environ, rdb redis.UniversalClient, store *results.Store, log zerolog.Logger) (stop func(), err error) {
	secret := env.getenv("LIVENESSQ_WEBHOOK_SECRET")
	if secret == "" {
		return func() {}, nil
	}
	if len(secret) < minWebhookSecretLen {
		return nil, usagef("LIVENESSQ_WEBHOOK_SECRET: must be at least %d characters", minWebhookSecretLen)
	}
	allowPrivate := false
	if v := env.getenv("LIVENESSQ_WEBHOOK_ALLOW_PRIVATE"); v != "" {
		if allowPrivate, err = strconv.ParseBool(v); err != nil {
			return nil, usagef("LIVENESSQ_WEBHOOK_ALLOW_PRIVATE: %q is not true or false", v)
		}
	}
	d, err := httpapi.NewDispatcher(httpapi.DispatcherConfig{Redis: rdb, Results: store, Secret: []byte(secret),
		AllowPrivate: allowPrivate, Logger: log})
	if err != nil {
		return nil, usagef("webhooks: %v", err)
	}
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { _ = d.Run(dctx) })
	log.Info().Bool("allow_private", allowPrivate).Msg("delivering completion callbacks")
	return func() { cancel(); wg.Wait() }, nil
}
