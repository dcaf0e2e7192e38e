package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/results"
	"github.com/livenessq/livenessq/storage"
)

// Defaults of Config.
const (
	DefaultAddr             = ":8080"
	DefaultRateLimit        = 50 // requests a second per token
	DefaultMaxBodyBytes     = 1 << 20
	DefaultMaxKeysBodyBytes = 16 << 20
	DefaultMaxWait          = 60 * time.Second
	DefaultWaitPoll         = 100 * time.Millisecond
)

// Config configures a Server.
type Config struct {
	// Enqueue queues the verification tasks. Required.
	Enqueue *enqueue.Client
	// Results reads results and batches. Required.
	Results *results.Store
	// Redis holds the rate limits, the pending callbacks and the asynq queue. Required;
	// normally the Redis of Enqueue and Results.
	Redis redis.UniversalClient
	// Storage is where the selfies are: tasks name its URL(), and prefixes are listed in
	// it. Required.
	Storage *storage.Bucket
	// SkipPrefixes are left out of prefix listings, e.g. "results/" when results are
	// written under the storage root. Default none.
	SkipPrefixes []string
	// Queue is the asynq queue of Enqueue, where ?wait looks up a task's state. Default
	// enqueue.DefaultQueue.
	Queue string
	// Tokens are the accepted bearer tokens. Required.
	Tokens *Tokens
	// Threshold applies to requests that give none. Default enqueue.DefaultThreshold
	// (0.6); otherwise it must be in (0, 1].
	Threshold float64
	// RateLimit is the number of requests a second each token may make, across every
	// replica sharing Redis. Default DefaultRateLimit (50); negative: no limit.
	RateLimit int
	// RateBurst is the number of requests a token may make at once. Default 2×RateLimit.
	RateBurst int
	// MaxBodyBytes caps a JSON request body; larger ones get 413. Default
	// DefaultMaxBodyBytes (1 MiB).
	MaxBodyBytes int64
	// MaxKeysBodyBytes caps a JSONL body of keys (POST /v1/batches). Default
	// DefaultMaxKeysBodyBytes (16 MiB). The body is held in memory while it is checked.
	MaxKeysBodyBytes int64
	// MaxWait caps ?wait: longer waits are cut to it. Default DefaultMaxWait (60 s).
	MaxWait time.Duration
	// WaitPoll is how often a waiting request looks for its result. Default
	// DefaultWaitPoll (100 ms).
	WaitPoll time.Duration
	// WebhookSecret signs completion callbacks (LIVENESSQ_WEBHOOK_SECRET). Default none:
	// requests with a callback_url are refused with CodeCallbacksDisabled, as unsigned
	// callbacks could be forged.
	WebhookSecret []byte
	// AllowPrivateCallbacks accepts callback URLs on loopback, private and link-local
	// addresses (LIVENESSQ_WEBHOOK_ALLOW_PRIVATE; local setups). Default false.
	AllowPrivateCallbacks bool
	// Resolver resolves callback hosts. Default net.DefaultResolver.
	Resolver *net.Resolver
	// Addr is where Start listens. Default DefaultAddr (":8080").
	Addr string
	// Logger receives one event per request (request id, route, status, duration and the
	// token's name, never a token) and the background listings' events. Default: the zero
	// Logger, which writes nothing.
	Logger zerolog.Logger
}

// Server is the HTTP API. Use Handler to mount it, or Start and Shutdown to serve it on
// Config.Addr.
type Server struct {
	cfg        Config
	storageURL string
	limiter    *rateLimiter
	inspector  *asynq.Inspector
	handler    http.Handler

	mu        sync.Mutex
	srv       *http.Server
	ln        net.Listener
	serveDone chan struct{}
	stopping  chan struct{} // closed when Shutdown starts
	stopped   bool
	jobs      sync.WaitGroup
	jobCtx    context.Context
	jobCancel context.CancelFunc
}

// New returns a Server after applying cfg's defaults, or an error naming the missing or
// bad field. It makes no request.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Enqueue == nil:
		return nil, errors.New("httpapi: Config.Enqueue is required")
	case cfg.Results == nil:
		return nil, errors.New("httpapi: Config.Results is required")
	case cfg.Redis == nil:
		return nil, errors.New("httpapi: Config.Redis is required")
	case cfg.Storage == nil:
		return nil, errors.New("httpapi: Config.Storage is required")
	case cfg.Tokens == nil || len(cfg.Tokens.names) == 0:
		return nil, errors.New("httpapi: Config.Tokens is required (LIVENESSQ_API_TOKENS)")
	}
	if cfg.Queue == "" {
		cfg.Queue = enqueue.DefaultQueue
	}
	if cfg.Threshold == 0 {
		cfg.Threshold = enqueue.DefaultThreshold
	}
	if err := enqueue.ValidateThreshold(cfg.Threshold); err != nil || cfg.Threshold <= 0 {
		return nil, fmt.Errorf("httpapi: Config.Threshold %v must be in (0, 1]", cfg.Threshold)
	}
	if cfg.RateLimit == 0 {
		cfg.RateLimit = DefaultRateLimit
	}
	if cfg.RateBurst == 0 {
		cfg.RateBurst = 2 * cfg.RateLimit
	}
	if cfg.RateLimit > 0 && cfg.RateBurst < 0 {
		return nil, fmt.Errorf("httpapi: Config.RateBurst %d is negative", cfg.RateBurst)
	}
	for _, f := range []struct {
		name string
		v    *int64
		def  int64
	}{{"MaxBodyBytes", &cfg.MaxBodyBytes, DefaultMaxBodyBytes}, {"MaxKeysBodyBytes", &cfg.MaxKeysBodyBytes, DefaultMaxKeysBodyBytes}} {
		if *f.v == 0 {
			*f.v = f.def
		}
		if *f.v < 0 {
			return nil, fmt.Errorf("httpapi: Config.%s %d is negative", f.name, *f.v)
		}
	}
	for _, f := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{{"MaxWait", &cfg.MaxWait, DefaultMaxWait}, {"WaitPoll", &cfg.WaitPoll, DefaultWaitPoll}} {
		if *f.v == 0 {
			*f.v = f.def
		}
		if *f.v < 0 {
			return nil, fmt.Errorf("httpapi: Config.%s %v is negative", f.name, *f.v)
		}
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	s := &Server{
		cfg:        cfg,
		storageURL: cfg.Storage.URL(),
		inspector:  asynq.NewInspectorFromRedisClient(cfg.Redis),
		stopping:   make(chan struct{}),
	}
	s.jobCtx, s.jobCancel = context.WithCancel(context.Background())
	if cfg.RateLimit > 0 {
		s.limiter = newRateLimiter(cfg.Redis, cfg.RateLimit, cfg.RateBurst)
	}
	h, err := s.mux()
	if err != nil {
		return nil, err
	}
	s.handler = h
	return s, nil
}

// mux registers routeTable, plus JSON answers for unknown routes (404) and known paths
// with another method (405).
func (s *Server) mux() (http.Handler, error) {
	handlers := map[string]http.HandlerFunc{
		"createVerification": s.createVerification,
		"createBatch":        s.createBatch,
		"getBatch":           s.getBatch,
		"getBatchResults":    s.getBatchResults,
		"getResult":          s.getResult,
		"getOpenAPI":         s.getOpenAPI,
		"getHealth":          s.getHealth,
	}
	mux := http.NewServeMux()
	allowed := map[string][]string{}
	var paths []string
	for _, rt := range routeTable {
		h, ok := handlers[rt.Name]
		if !ok {
			return nil, fmt.Errorf("httpapi: route %s has no handler", rt.Name)
		}
		mux.Handle(rt.Method+" "+rt.Pattern, s.wrap(rt, h))
		if _, seen := allowed[rt.Pattern]; !seen {
			paths = append(paths, rt.Pattern)
		}
		allowed[rt.Pattern] = append(allowed[rt.Pattern], rt.Method)
	}
	for _, p := range paths {
		methods := allowed[p]
		if slices.Contains(methods, "GET") {
			methods = append(methods, "HEAD")
		}
		allow := strings.Join(methods, ", ")
		mux.Handle(p, s.wrap(Route{Pattern: p, Name: "methodNotAllowed", Public: true}, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, newError(http.StatusMethodNotAllowed, CodeMethodNotAllowed, fmt.Sprintf("%s is not allowed here; allowed: %s", r.Method, allow)))
		}))
	}
	mux.Handle("/", s.wrap(Route{Pattern: "/", Name: "notFound", Public: true}, func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, newError(http.StatusNotFound, CodeNotFound, "no such route; see /v1/openapi.json"))
	}))
	return mux, nil
}

// Handler returns the API's http.Handler, to mount in a server of the caller's.
func (s *Server) Handler() http.Handler { return s.handler }

// Start listens on Config.Addr and serves the API until Shutdown; it returns once the
// listener is open. Starting twice, or after Shutdown, is an error.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("httpapi: server shut down")
	}
	if s.srv != nil {
		return errors.New("httpapi: server already started")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("httpapi: listen on %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          newStdLogger(s.cfg.Logger),
	}
	s.serveDone = make(chan struct{})
	srv, done := s.srv, s.serveDone
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.Logger.Error().Err(err).Msg("http api stopped")
		}
	}()
	s.cfg.Logger.Info().Str("addr", ln.Addr().String()).Strs("tokens", s.cfg.Tokens.Names()).Msg("http api listening")
	return nil
}

// Addr returns the address Start listens on (useful with port 0), or "" before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Shutdown stops the server gracefully: waiting requests (?wait) answer 202 at once,
// new connections are refused, requests in flight finish, and background prefix
// listings run to their end. When ctx ends first, connections are closed and the
// listings are cancelled (their batches keep what was queued and can be resumed by
// posting the same batch_id and prefix again); Shutdown then returns ctx's error once
// they have stopped. Calling it twice, or without Start, is safe.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		close(s.stopping)
	}
	srv, done := s.srv, s.serveDone
	s.mu.Unlock()
	var err error
	if srv != nil {
		if err = srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		<-done
	}
	jobsDone := make(chan struct{})
	go func() {
		s.jobs.Wait()
		close(jobsDone)
	}()
	select {
	case <-jobsDone:
	case <-ctx.Done():
		s.jobCancel()
		<-jobsDone
		if err == nil {
			err = ctx.Err()
		}
	}
	s.jobCancel()
	return err
}

// startJob runs f in the background, bound to the server's life rather than a
// request's; it returns false when the server is stopping.
func (s *Server) startJob(f func(ctx context.Context)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.jobs.Go(func() { f(s.jobCtx) })
	return true
}

// runJob runs f now, in the caller's goroutine, as a job bound to the server's life
// (Shutdown waits for it, or cancels it at its deadline); it returns false without
// running f when the server is stopping.
func (s *Server) runJob(f func(ctx context.Context)) bool {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return false
	}
	s.jobs.Add(1)
	s.mu.Unlock()
	defer s.jobs.Done()
	f(s.jobCtx)
	return true
}

// tokenKey is the context key of the authenticated token's name.
type tokenKey struct{}

// tokenName returns the name of the token that authenticated r.
func tokenName(r *http.Request) string {
	n, _ := r.Context().Value(tokenKey{}).(string)
	return n
}

// wrap adds to h what every route has: a request id, one log event, and for non-public
// routes the bearer token check and the rate limit.
func (s *Server) wrap(rt Route, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rid := requestID(r)
		w.Header().Set("X-Request-ID", rid)
		sw := &statusWriter{ResponseWriter: w}
		var token string
		defer func() {
			status := sw.status
			if status == 0 {
				status = http.StatusOK
			}
			ev := s.cfg.Logger.Info()
			if status >= 500 {
				ev = s.cfg.Logger.Warn()
			}
			ev.Str("request_id", rid).Str("method", r.Method).Str("route", rt.Pattern).Str("operation", rt.Name).
				Int("status", status).Int64("bytes", sw.bytes).Dur("duration", time.Since(start)).
				Str("token", token).Msg("http request")
		}()
		if !rt.Public {
			name, ok := s.cfg.Tokens.Authenticate(r.Header.Get("Authorization"))
			if !ok {
				challenge := `Bearer realm="livenessq"`
				msg := "a bearer token is required: Authorization: Bearer <token>"
				if r.Header.Get("Authorization") != "" {
					challenge += `, error="invalid_token"`
					msg = "the bearer token is not valid"
				}
				sw.Header().Set("WWW-Authenticate", challenge)
				writeError(sw, newError(http.StatusUnauthorized, CodeUnauthorized, msg))
				return
			}
			token = name
			if s.limiter != nil {
				ok, retry, err := s.limiter.allow(r.Context(), name)
				if err != nil {
					s.cfg.Logger.Error().Err(err).Str("request_id", rid).Msg("rate limit unavailable")
					writeRetryable(sw, newError(http.StatusServiceUnavailable, CodeUnavailable, "the rate limiter is unavailable; try again"), time.Second)
					return
				}
				if !ok {
					writeRetryable(sw, newError(http.StatusTooManyRequests, CodeRateLimited,
						fmt.Sprintf("token %q is over its rate limit of %d requests a second", name, s.cfg.RateLimit)), retry)
					return
				}
			}
			r = r.WithContext(context.WithValue(r.Context(), tokenKey{}, name))
		}
		h(sw, r)
	})
}

// requestID returns the request's X-Request-ID when it is a sane one, else a new id.
func requestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-ID"); id != "" && len(id) <= 128 {
		ok := true
		for _, c := range id {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
				ok = false
				break
			}
		}
		if ok {
			return id
		}
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// statusWriter records the status and size of an answer.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer (Flush, deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush sends buffered data to the client.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// newStdLogger routes net/http's own messages (TLS handshake errors, panics) to log.
func newStdLogger(log zerolog.Logger) *stdlog.Logger {
	return stdlog.New(log.With().Str("component", "http").Logger(), "", 0)
}
