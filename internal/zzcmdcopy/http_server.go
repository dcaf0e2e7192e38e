package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/livenessq/livenessq/storage"
)

// readyTimeout bounds each readiness check of /readyz.
const readyTimeout = 2 * time.Second

// readyCheck is one dependency /readyz asks: nil means it answers.
type readyCheck struct {
	name  string
	check func(ctx context.Context) error
}

// httpServer is a worker's observability endpoint: Prometheus /metrics, /healthz (the
// process is alive) and /readyz (its dependencies answer).
type httpServer struct {
	log    zerolog.Logger
	checks []readyCheck
	srv    *http.Server

	mu sync.Mutex
	ln net.Listener
}

// newHTTPServer returns a server for addr publishing gatherer's metrics; /readyz runs
// checks.
func newHTTPServer(addr string, gatherer prometheus.Gatherer, checks []readyCheck, log zerolog.Logger) *httpServer {
	s := &httpServer{log: log, checks: checks}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      promLogger{log},
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	s.srv = &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s
}

// Start listens on the address and serves in the background. It returns the address
// listened on (useful with port 0).
func (s *httpServer) Start() (string, error) {
	ln, err := net.Listen("tcp", s.srv.Addr)
	if err != nil {
		return "", usagef("--http-addr: %v", err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Msg("http server stopped")
		}
	}()
	return ln.Addr().String(), nil
}

// Shutdown stops the server, waiting for open requests until ctx ends. Safe to call
// before Start or twice.
func (s *httpServer) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	started := s.ln != nil
	s.mu.Unlock()
	if !started {
		return nil
	}
	return s.srv.Shutdown(ctx)
}

// readyz answers 200 when every check passes within readyTimeout, else 503 with the
// first failure as reason.
func (s *httpServer) readyz(w http.ResponseWriter, r *http.Request) {
	type answer struct {
		name string
		err  error
	}
	answers := make([]answer, len(s.checks))
	var wg sync.WaitGroup
	for i, c := range s.checks {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
			defer cancel()
			answers[i] = answer{c.name, c.check(ctx)}
		})
	}
	wg.Wait()
	sort.SliceStable(answers, func(i, j int) bool { return answers[i].name < answers[j].name })
	checks := map[string]string{}
	reason := ""
	for _, a := range answers {
		if a.err == nil {
			checks[a.name] = "ok"
			continue
		}
		checks[a.name] = a.err.Error()
		if reason == "" {
			reason = fmt.Sprintf("%s: %v", a.name, a.err)
		}
	}
	if reason != "" {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": reason, "checks": checks})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true, "checks": checks})
}

// redisCheck is ready when Redis answers PING.
func redisCheck(rdb redis.UniversalClient) readyCheck {
	return readyCheck{name: "redis", check: func(ctx context.Context) error {
		return rdb.Ping(ctx).Err()
	}}
}

// readyProbeKey is the key /readyz asks storage about; it need not exist.
const readyProbeKey = ".livenessq-readyz"

// storageCheck is ready when the storage answers a Stat (a missing object is an answer).
func storageCheck(name string, b *storage.Bucket) readyCheck {
	return readyCheck{name: name, check: func(ctx context.Context) error {
		_, err := b.Stat(ctx, readyProbeKey)
		if err == nil || errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		return err
	}}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// promLogger sends promhttp's errors to zerolog.
type promLogger struct{ log zerolog.Logger }

func (l promLogger) Println(v ...any) { l.log.Warn().Msg(fmt.Sprint(v...)) }
