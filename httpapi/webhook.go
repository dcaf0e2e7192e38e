package httpapi

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/livenessq/livenessq/results"
)

// PendingCallbacksKey names the Redis set of the ids of batches whose completion
// callback is still to be delivered; every Dispatcher scans it.
const PendingCallbacksKey = results.KeyPrefix + "{callbacks}:pending"

// Webhook request headers.
const (
	// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the body under the
	// webhook secret (see Sign and VerifySignature).
	SignatureHeader = "X-Livenessq-Signature"
	// EventHeader names the event: EventBatchCompleted.
	EventHeader = "X-Livenessq-Event"
	// BatchHeader carries the batch id, for receivers that deduplicate.
	BatchHeader = "X-Livenessq-Batch"
	// AttemptHeader carries the delivery attempt, from 1.
	AttemptHeader = "X-Livenessq-Attempt"
)

// EventBatchCompleted is the event of a completion callback.
const EventBatchCompleted = "batch.completed"

// Defaults of DispatcherConfig.
const (
	DefaultWebhookTimeout     = 10 * time.Second
	DefaultWebhookInterval    = time.Second
	DefaultWebhookAttempts    = 8
	DefaultWebhookBackoff     = 2 * time.Second
	DefaultWebhookBackoffMax  = 10 * time.Minute
	DefaultWebhookConcurrency = 4
	DefaultDiscoverInterval   = 30 * time.Second
	DefaultDiscoverWindow     = 7 * 24 * time.Hour
)

// discoverLimit caps the batches one discovery pass looks at.
const discoverLimit = 10000

// WebhookPayload is the JSON body of a completion callback.
type WebhookPayload struct {
	// Event is EventBatchCompleted.
	Event string `json:"event"`
	// Batch is the completed batch's summary, without its callback state.
	Batch *BatchView `json:"batch"`
}

// Sign returns the SignatureHeader value of body under secret: "sha256=" followed by the
// lowercase hex HMAC-SHA256 of body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature reports, in constant time, whether header is the SignatureHeader value
// of body under secret. Receivers call it on the raw body before parsing it.
func VerifySignature(secret, body []byte, header string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(header))
}

// MarkCallbackPending records that batch id, created with a callback URL, has a
// completion callback to deliver: its callback state becomes pending unless it has one
// already, and it joins PendingCallbacksKey, which every Dispatcher scans. The API calls
// it when it creates such a batch; other producers of batches with a CallbackURL must
// call it too, after creating the batch.
func MarkCallbackPending(ctx context.Context, rdb redis.UniversalClient, store *results.Store, id string) error {
	if _, err := store.SetBatchFieldNX(ctx, id, results.FieldCallbackState, CallbackPending); err != nil {
		return fmt.Errorf("mark callback of batch %s pending: %w", id, err)
	}
	if err := rdb.SAdd(ctx, PendingCallbacksKey, id).Err(); err != nil {
		return fmt.Errorf("mark callback of batch %s pending: %w", id, err)
	}
	return nil
}

// DispatcherConfig configures a Dispatcher.
type DispatcherConfig struct {
	// Redis holds PendingCallbacksKey and the batches. Required.
	Redis redis.UniversalClient
	// Results reads the batches' summaries and keeps their delivery state. Required.
	Results *results.Store
	// Secret is the HMAC-SHA256 key of the signatures (LIVENESSQ_WEBHOOK_SECRET).
	// Required; it never appears in a log or error.
	Secret []byte
	// AllowPrivate lets callbacks connect to loopback, private and link-local addresses
	// (LIVENESSQ_WEBHOOK_ALLOW_PRIVATE; local setups and tests). Default false: every
	// connection is checked with PublicAddr as it is dialled.
	AllowPrivate bool
	// Timeout bounds one delivery attempt, answer included. Default
	// DefaultWebhookTimeout (10 s).
	Timeout time.Duration
	// Interval is how often the pending batches are scanned. Default
	// DefaultWebhookInterval (1 s).
	Interval time.Duration
	// MaxAttempts is the number of attempts before a callback is failed. Default
	// DefaultWebhookAttempts (8).
	MaxAttempts int
	// Backoff is the wait after the first failed attempt; it doubles after each further
	// one (plus up to 25% jitter), up to BackoffMax. Defaults DefaultWebhookBackoff (2 s)
	// and DefaultWebhookBackoffMax (10 min).
	Backoff, BackoffMax time.Duration
	// Lease is how long a claimed delivery is reserved to its Dispatcher: another takes it
	// over after that (the first one died). Default Timeout + 30 s; it must exceed
	// Timeout.
	Lease time.Duration
	// Concurrency is the number of deliveries in flight in this Dispatcher. Default
	// DefaultWebhookConcurrency (4).
	Concurrency int
	// DiscoverInterval is how often the Dispatcher looks for batches created with a
	// callback URL by producers that did not call MarkCallbackPending (`livenessq
	// enqueue --callback-url`, Go services using the enqueue package), among those
	// created within DiscoverWindow. Defaults DefaultDiscoverInterval (30 s) and
	// DefaultDiscoverWindow (7 days).
	DiscoverInterval, DiscoverWindow time.Duration
	// Logger receives one event per attempt (batch id, attempt, status, the URL's host,
	// never the URL's query or the secret). Default: the zero Logger, which writes
	// nothing.
	Logger zerolog.Logger
}

// Dispatcher delivers the completion callbacks of batches, each once, however many
// Dispatchers run (see the package documentation for how). Run it with Run.
type Dispatcher struct {
	cfg      DispatcherConfig
	client   *http.Client
	id       string
	running  atomic.Bool
	wg       sync.WaitGroup
	mu       sync.Mutex
	inflight map[string]bool
}

// NewDispatcher returns a Dispatcher after applying cfg's defaults, or an error naming
// the missing or bad field.
func NewDispatcher(cfg DispatcherConfig) (*Dispatcher, error) {
	if cfg.Redis == nil {
		return nil, errors.New("httpapi: DispatcherConfig.Redis is required")
	}
	if cfg.Results == nil {
		return nil, errors.New("httpapi: DispatcherConfig.Results is required")
	}
	if len(cfg.Secret) == 0 {
		return nil, errors.New("httpapi: DispatcherConfig.Secret is required (LIVENESSQ_WEBHOOK_SECRET)")
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"Timeout", &cfg.Timeout, DefaultWebhookTimeout},
		{"Interval", &cfg.Interval, DefaultWebhookInterval},
		{"Backoff", &cfg.Backoff, DefaultWebhookBackoff},
		{"BackoffMax", &cfg.BackoffMax, DefaultWebhookBackoffMax},
		{"DiscoverInterval", &cfg.DiscoverInterval, DefaultDiscoverInterval},
		{"DiscoverWindow", &cfg.DiscoverWindow, DefaultDiscoverWindow},
		{"Lease", &cfg.Lease, -1}, // after Timeout: it depends on it
	} {
		if *d.v == 0 {
			*d.v = d.def
			if d.def < 0 {
				*d.v = cfg.Timeout + 30*time.Second
			}
		}
		if *d.v < 0 {
			return nil, fmt.Errorf("httpapi: DispatcherConfig.%s %v is negative", d.name, *d.v)
		}
	}
	if cfg.Lease <= cfg.Timeout {
		return nil, fmt.Errorf("httpapi: DispatcherConfig.Lease %v must exceed Timeout %v", cfg.Lease, cfg.Timeout)
	}
	switch {
	case cfg.MaxAttempts == 0:
		cfg.MaxAttempts = DefaultWebhookAttempts
	case cfg.MaxAttempts < 0:
		return nil, fmt.Errorf("httpapi: DispatcherConfig.MaxAttempts %d is negative", cfg.MaxAttempts)
	}
	switch {
	case cfg.Concurrency == 0:
		cfg.Concurrency = DefaultWebhookConcurrency
	case cfg.Concurrency < 0:
		return nil, fmt.Errorf("httpapi: DispatcherConfig.Concurrency %d is negative", cfg.Concurrency)
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	return &Dispatcher{cfg: cfg, client: webhookClient(cfg), id: hex.EncodeToString(rnd[:]), inflight: map[string]bool{}}, nil
}

// webhookClient is the HTTP client of callbacks: no proxy (the address check must see
// the receiver's address), no redirects, and, unless private addresses are allowed,
// a dialer that refuses every address that is not PublicAddr.
func webhookClient(cfg DispatcherConfig) *http.Client {
	dialer := &net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}
	if !cfg.AllowPrivate {
		dialer.Control = dialControl
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		IdleConnTimeout:       30 * time.Second,
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Run scans the pending callbacks every Interval and delivers those of complete batches
// until ctx ends; then it stops the deliveries in flight (they are attempted again
// later, by this or another Dispatcher, and are not counted) and returns nil. Running a
// Dispatcher twice at once is an error.
func (d *Dispatcher) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("httpapi: Dispatcher is already running")
	}
	defer d.running.Store(false)
	defer d.client.CloseIdleConnections()
	defer d.wg.Wait()
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	var discovered time.Time
	for {
		if time.Since(discovered) >= d.cfg.DiscoverInterval {
			discovered = time.Now()
			if err := d.discover(ctx); err != nil && ctx.Err() == nil {
				d.cfg.Logger.Warn().Err(err).Msg("look for batches with a callback (will retry)")
			}
		}
		if err := d.scan(ctx); err != nil && ctx.Err() == nil {
			d.cfg.Logger.Warn().Err(err).Msg("scan pending callbacks (will retry)")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// discover marks pending the callbacks of batches created within DiscoverWindow with a
// callback URL and no delivery state yet.
func (d *Dispatcher) discover(ctx context.Context) error {
	since := strconv.FormatInt(time.Now().Add(-d.cfg.DiscoverWindow).Unix(), 10)
	ids, err := d.cfg.Redis.ZRevRangeByScore(ctx, results.BatchIndexKey,
		&redis.ZRangeBy{Min: since, Max: "+inf", Count: discoverLimit}).Result()
	if err != nil {
		return err
	}
	for len(ids) > 0 {
		page := ids[:min(len(ids), 200)]
		ids = ids[len(page):]
		pipe := d.cfg.Redis.Pipeline()
		cmds := make([]*redis.SliceCmd, len(page))
		for i, id := range page {
			cmds[i] = pipe.HMGet(ctx, results.BatchMetaKey(id), results.FieldCallbackURL, results.FieldCallbackState)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		for i, c := range cmds {
			v := c.Val()
			if len(v) != 2 {
				continue
			}
			u, _ := v[0].(string)
			state, _ := v[1].(string)
			if u == "" || state != "" {
				continue
			}
			if err := MarkCallbackPending(ctx, d.cfg.Redis, d.cfg.Results, page[i]); err != nil {
				return err
			}
			d.cfg.Logger.Debug().Str("batch_id", page[i]).Msg("batch with a callback found")
		}
	}
	return nil
}

// scan looks at every pending batch once and starts the deliveries that are due.
func (d *Dispatcher) scan(ctx context.Context) error {
	iter := d.cfg.Redis.SScan(ctx, PendingCallbacksKey, 0, "", 200).Iterator()
	for iter.Next(ctx) {
		id := iter.Val()
		d.mu.Lock()
		busy, full := d.inflight[id], len(d.inflight) >= d.cfg.Concurrency
		d.mu.Unlock()
		if busy {
			continue
		}
		sum, err := d.cfg.Results.Batch(ctx, id)
		switch {
		case errors.Is(err, results.ErrBatchNotFound), errors.Is(err, results.ErrInvalidBatchID):
			d.forget(ctx, id)
			continue
		case err != nil:
			return err
		}
		st := sum.Info.CallbackState
		if sum.Info.CallbackURL == "" || st == CallbackDelivered || st == CallbackFailed {
			d.forget(ctx, id)
			continue
		}
		if !sum.Complete {
			continue
		}
		if full {
			return nil // the rest waits for the next scan
		}
		d.mu.Lock()
		d.inflight[id] = true
		d.mu.Unlock()
		d.wg.Go(func() {
			defer func() {
				d.mu.Lock()
				delete(d.inflight, id)
				d.mu.Unlock()
			}()
			d.deliver(ctx, id, sum.Info.CallbackURL)
		})
	}
	return iter.Err()
}

// forget drops id from the pending set.
func (d *Dispatcher) forget(ctx context.Context, id string) {
	if err := d.cfg.Redis.SRem(ctx, PendingCallbacksKey, id).Err(); err != nil && ctx.Err() == nil {
		d.cfg.Logger.Warn().Err(err).Str("batch_id", id).Msg("drop batch from the pending callbacks (will retry)")
	}
}

// claimScript takes the delivery of a batch's callback for one attempt, unless it is
// done, held by another Dispatcher whose lease runs, or waiting for its next attempt.
// KEYS: the batch meta hash. ARGV: lease ms, owner, max attempts.
// Returns {attempt} when claimed, else {0, reason}: "gone", "done", "busy" or "later".
var claimScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 'gone'} end
local st = redis.call('HGET', KEYS[1], 'callback_state')
if st == 'delivered' or st == 'failed' then return {0, 'done'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if st == 'delivering' then
  local lease = tonumber(redis.call('HGET', KEYS[1], 'callback_lease_until') or '0') or 0
  if lease > now then return {0, 'busy'} end
end
local nxt = tonumber(redis.call('HGET', KEYS[1], 'callback_next_at') or '0') or 0
if nxt > now then return {0, 'later'} end
local n = tonumber(redis.call('HGET', KEYS[1], 'callback_attempts') or '0') or 0
if n >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'callback_state', 'failed')
  if st == 'delivering' then
    redis.call('HSET', KEYS[1], 'callback_last_error', 'the dispatcher sending the last attempt stopped before it ended')
  end
  redis.call('HDEL', KEYS[1], 'callback_owner', 'callback_lease_until', 'callback_next_at')
  return {0, 'done'}
end
n = redis.call('HINCRBY', KEYS[1], 'callback_attempts', 1)
redis.call('HSET', KEYS[1], 'callback_state', 'delivering', 'callback_owner', ARGV[2],
  'callback_lease_until', string.format('%d', now + tonumber(ARGV[1])),
  'callback_last_attempt_at', string.format('%d', now))
return {n}
`)

// finishScript records the end of an attempt, if its owner still holds the delivery.
// KEYS: the batch meta hash. ARGV: owner, new state, last status, last error, delay ms
// before the next attempt, "1" to take the attempt back (it was interrupted).
// Returns 1 when recorded, 0 when the delivery was no longer this owner's.
var finishScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'callback_owner') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'callback_state') ~= 'delivering' then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HDEL', KEYS[1], 'callback_owner', 'callback_lease_until', 'callback_next_at')
redis.call('HSET', KEYS[1], 'callback_state', ARGV[2], 'callback_last_status', ARGV[3], 'callback_last_error', ARGV[4])
if ARGV[2] == 'delivered' then
  redis.call('HSET', KEYS[1], 'callback_delivered_at', string.format('%d', now))
elseif ARGV[2] == 'pending' then
  redis.call('HSET', KEYS[1], 'callback_next_at', string.format('%d', now + tonumber(ARGV[5])))
end
if ARGV[6] == '1' then redis.call('HINCRBY', KEYS[1], 'callback_attempts', -1) end
return 1
`)

// deliver makes one delivery attempt of batch id's callback, if it can claim it.
func (d *Dispatcher) deliver(ctx context.Context, id, rawURL string) {
	meta := results.BatchMetaKey(id)
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	owner := d.id + ":" + hex.EncodeToString(rnd[:])
	res, err := claimScript.Run(ctx, d.cfg.Redis, []string{meta},
		d.cfg.Lease.Milliseconds(), owner, d.cfg.MaxAttempts).Slice()
	if err != nil {
		if ctx.Err() == nil {
			d.cfg.Logger.Warn().Err(err).Str("batch_id", id).Msg("claim callback delivery (will retry)")
		}
		return
	}
	attempt, _ := res[0].(int64)
	if attempt == 0 {
		if reason, _ := res[1].(string); reason == "gone" || reason == "done" {
			d.forget(ctx, id)
		}
		return
	}
	host := ""
	if u, err := url.Parse(rawURL); err == nil {
		host = u.Host
	}
	log := d.cfg.Logger.With().Str("batch_id", id).Int64("attempt", attempt).Str("callback_host", host).Logger()

	status, derr := d.post(ctx, id, rawURL, attempt)
	state, delay, uncount := CallbackPending, time.Duration(0), false
	msg := ""
	switch {
	case derr == nil && status >= 200 && status <= 299:
		state = CallbackDelivered
	case ctx.Err() != nil:
		// Stopping: hand the delivery back, uncounted, for the next Dispatcher.
		msg, uncount = "interrupted: the dispatcher stopped", true
	case errors.Is(derr, ErrCallbackAddress), errors.Is(derr, ErrInvalidCallbackURL):
		state, msg = CallbackFailed, derr.Error() // permanent: retrying cannot help
	default:
		if derr != nil {
			msg = derr.Error()
		} else {
			msg = fmt.Sprintf("the receiver answered %d", status)
		}
		if attempt >= int64(d.cfg.MaxAttempts) {
			state = CallbackFailed
		} else {
			delay = d.backoff(attempt)
		}
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	uc := "0"
	if uncount {
		uc = "1"
	}
	ok, err := finishScript.Run(fctx, d.cfg.Redis, []string{meta}, owner, state, strconv.Itoa(status), truncate(msg, 300),
		delay.Milliseconds(), uc).Int()
	switch {
	case err != nil:
		log.Error().Err(err).Str("state", state).Msg("record callback delivery (its lease will expire and it will be attempted again)")
		return
	case ok == 0:
		log.Warn().Str("state", state).Msg("callback delivery taken over by another dispatcher after its lease expired")
		return
	}
	ev := log.Info()
	switch state {
	case CallbackDelivered:
		d.forget(fctx, id)
	case CallbackFailed:
		ev = log.Warn()
		d.forget(fctx, id)
	default:
		ev = log.Warn().Dur("retry_in", delay)
	}
	ev.Int("status", status).Str("state", state).Str("error", msg).Msg("callback attempt")
}

// post sends the batch's summary to rawURL and returns the answer's status.
func (d *Dispatcher) post(ctx context.Context, id, rawURL string, attempt int64) (int, error) {
	sum, err := d.cfg.Results.Batch(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("read batch: %w", err)
	}
	view := NewBatchView(sum)
	view.Callback = nil
	body, err := json.Marshal(WebhookPayload{Event: EventBatchCompleted, Batch: view})
	if err != nil {
		return 0, fmt.Errorf("encode summary: %w", err)
	}
	actx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, rawURL, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrInvalidCallbackURL, unwrapURLError(err))
	}
	req.ContentLength = int64(len(body))
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "livenessq-webhook/1")
	h.Set(EventHeader, EventBatchCompleted)
	h.Set(BatchHeader, id)
	h.Set(AttemptHeader, strconv.FormatInt(attempt, 10))
	h.Set(SignatureHeader, Sign(d.cfg.Secret, body))
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, unwrapURLError(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// backoff is the wait after failed attempt n (from 1).
func (d *Dispatcher) backoff(n int64) time.Duration {
	w := d.cfg.Backoff
	for i := int64(1); i < n && w < d.cfg.BackoffMax; i++ {
		w *= 2
	}
	w = min(w, d.cfg.BackoffMax)
	return w + time.Duration(mrand.Int64N(int64(w)/4+1))
}

// unwrapURLError drops the *url.Error wrapper, whose message repeats the whole URL (its
// query may hold a receiver's secret).
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
