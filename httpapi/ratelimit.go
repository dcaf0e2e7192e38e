package httpapi

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/livenessq/livenessq/results"
)

// RateKey names the Redis key holding the request-rate state of the token called name:
// "livenessq:{api}:rate:<name>". Every replica of the API shares it, so the limit holds
// across them.
func RateKey(name string) string { return results.KeyPrefix + "{api}:rate:" + name }

// rateLimiter is the per-token request rate limit: a GCRA (redis_rate) in Redis.
type rateLimiter struct {
	limiter *redis_rate.Limiter
	limit   redis_rate.Limit
}

// newRateLimiter allows perSecond requests a second per token, with bursts of burst.
func newRateLimiter(rdb redis.UniversalClient, perSecond, burst int) *rateLimiter {
	return &rateLimiter{
		limiter: redis_rate.NewLimiter(unprefixed{rdb}),
		limit:   redis_rate.Limit{Rate: perSecond, Burst: burst, Period: time.Second},
	}
}

// allow counts one request of token name and reports whether it may proceed, and
// otherwise how long to wait.
func (l *rateLimiter) allow(ctx context.Context, name string) (ok bool, retryAfter time.Duration, err error) {
	res, err := l.limiter.Allow(ctx, RateKey(name), l.limit)
	if err != nil {
		return false, 0, fmt.Errorf("rate limit of token %q: %w", name, err)
	}
	if res.Allowed > 0 {
		return true, 0, nil
	}
	return false, res.RetryAfter, nil
}

// redisRatePrefix is what redis_rate puts before every key.
const redisRatePrefix = "rate:"

// unprefixed hands redis_rate a client that drops the "rate:" it puts before every key,
// so that the keys are exactly RateKey's and start with "livenessq:" like every other.
type unprefixed struct{ rdb redis.UniversalClient }

func strip(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = strings.TrimPrefix(k, redisRatePrefix)
	}
	return out
}

func (u unprefixed) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return u.rdb.Eval(ctx, script, strip(keys), args...)
}

func (u unprefixed) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return u.rdb.EvalSha(ctx, sha1, strip(keys), args...)
}

func (u unprefixed) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return u.rdb.EvalRO(ctx, script, strip(keys), args...)
}

func (u unprefixed) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return u.rdb.EvalShaRO(ctx, sha1, strip(keys), args...)
}

func (u unprefixed) ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd {
	return u.rdb.ScriptExists(ctx, hashes...)
}

func (u unprefixed) ScriptLoad(ctx context.Context, script string) *redis.StringCmd {
	return u.rdb.ScriptLoad(ctx, script)
}

func (u unprefixed) Del(ctx context.Context, keys ...string) *redis.IntCmd {
	return u.rdb.Del(ctx, strip(keys)...)
}
