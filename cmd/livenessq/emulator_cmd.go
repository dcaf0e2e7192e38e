package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/livenessq/livenessq/kairos/kairostest"
)

func init() {
	register(&command{name: "emulator", summary: "serve the Kairos API emulator", run: runEmulator})
}

// emulatorFlags are the emulator's knobs (kairostest.Config) as flags.
type emulatorFlags struct {
	addr          string
	appID         string
	appKey        string
	authStatus    int
	latency       time.Duration
	jitter        time.Duration
	rateLimit     int
	quotaTotal    int
	quotaPeriod   time.Duration
	errorRate     float64
	maxConcurrent int
	retryAfter    time.Duration
	maxBody       byteSize
	seed          uint64
	rules         ruleList
	outages       outageList
	sampleRules   bool
}

func (f *emulatorFlags) register(fs *flagSet) {
	f.maxBody = kairostest.DefaultMaxBodyBytes
	fs.StringVar(&f.addr, "addr", "127.0.0.1:8700", "listen address (port 0 picks a free port; the address is printed)")
	fs.bindEnv("addr", "KAIROS_EMULATOR_ADDR")
	fs.StringVar(&f.appID, "app-id", "", "accepted app id; empty accepts any")
	fs.bindEnv("app-id", "KAIROS_EMULATOR_APP_ID")
	fs.StringVar(&f.appKey, "app-key", "", "accepted app key; empty accepts any (prefer the variable: flags show in ps)")
	fs.bindEnv("app-key", "KAIROS_EMULATOR_APP_KEY")
	fs.IntVar(&f.authStatus, "auth-failure-status", 401, "status for missing or wrong credentials: 401 or 403")
	fs.bindEnv("auth-failure-status", "KAIROS_EMULATOR_AUTH_FAILURE_STATUS")
	fs.DurationVar(&f.latency, "latency", 0, "how long the API takes to answer, from the request's arrival")
	fs.bindEnv("latency", "KAIROS_EMULATOR_LATENCY")
	fs.DurationVar(&f.jitter, "latency-jitter", 0, "random extra latency, uniform in [0, jitter)")
	fs.bindEnv("latency-jitter", "KAIROS_EMULATOR_LATENCY_JITTER")
	fs.IntVar(&f.rateLimit, "rate-limit", 0, "requests admitted per sliding second, 403 beyond; 0 = unlimited")
	fs.bindEnv("rate-limit", "KAIROS_EMULATOR_RATE_LIMIT")
	fs.IntVar(&f.quotaTotal, "quota-total", 0, "requests admitted per quota period, 403 beyond; 0 = unlimited")
	fs.bindEnv("quota-total", "KAIROS_EMULATOR_QUOTA_TOTAL")
	fs.DurationVar(&f.quotaPeriod, "quota-period", 0, "length of a quota period; 0 = the emulator's whole life")
	fs.bindEnv("quota-period", "KAIROS_EMULATOR_QUOTA_PERIOD")
	fs.Float64Var(&f.errorRate, "error-rate", 0, "share of requests, in [0, 1], answered 503 at random")
	fs.bindEnv("error-rate", "KAIROS_EMULATOR_ERROR_RATE")
	fs.IntVar(&f.maxConcurrent, "max-concurrent", 0, "requests served at once, 429 beyond; 0 = unlimited")
	fs.bindEnv("max-concurrent", "KAIROS_EMULATOR_MAX_CONCURRENT")
	fs.DurationVar(&f.retryAfter, "retry-after", 0, "Retry-After sent with 5xx, 403 and 429 answers; 0 = none")
	fs.bindEnv("retry-after", "KAIROS_EMULATOR_RETRY_AFTER")
	fs.Var(&f.maxBody, "max-body-bytes", "largest request body, 413 beyond (suffixes KB, MB, KiB, MiB allowed)")
	fs.bindEnv("max-body-bytes", "KAIROS_EMULATOR_MAX_BODY_BYTES")
	fs.Uint64Var(&f.seed, "seed", 0, "seed of the random draws (latency jitter, error rate)")
	fs.bindEnv("seed", "KAIROS_EMULATOR_SEED")
	fs.Var(&f.rules, "rule", "verdict rule PATTERN=score:0.9|noface|status:422, matched against the selfie's file name (path.Match); repeatable, first match wins; the variable takes rules separated by ';'")
	fs.bindEnv("rule", "KAIROS_EMULATOR_RULES")
	fs.Var(&f.outages, "outage", "a window answered 503, START+LENGTH from startup, e.g. 30s+10s; repeatable; the variable takes windows separated by ';'")
	fs.bindEnv("outage", "KAIROS_EMULATOR_OUTAGES")
	fs.BoolVar(&f.sampleRules, "sample-rules", false, "add the rules of `livenessq run`'s sample set (live-*, spoof-*, noface-*, rejected-*) after --rule's")
	fs.bindEnv("sample-rules", "KAIROS_EMULATOR_SAMPLE_RULES")
}

// config returns the emulator's Config, validated; errors name the flag.
func (f *emulatorFlags) config(start time.Time) (kairostest.Config, error) {
	switch {
	case f.authStatus != 401 && f.authStatus != 403:
		return kairostest.Config{}, usagef("--auth-failure-status: must be 401 or 403, got %d", f.authStatus)
	case f.latency < 0:
		return kairostest.Config{}, usagef("--latency: must not be negative, got %v", f.latency)
	case f.jitter < 0:
		return kairostest.Config{}, usagef("--latency-jitter: must not be negative, got %v", f.jitter)
	case f.rateLimit < 0:
		return kairostest.Config{}, usagef("--rate-limit: must be ≥ 0, got %d", f.rateLimit)
	case f.quotaTotal < 0:
		return kairostest.Config{}, usagef("--quota-total: must be ≥ 0, got %d", f.quotaTotal)
	case f.quotaPeriod < 0:
		return kairostest.Config{}, usagef("--quota-period: must not be negative, got %v", f.quotaPeriod)
	case !(f.errorRate >= 0 && f.errorRate <= 1):
		return kairostest.Config{}, usagef("--error-rate: must be a number in [0, 1], got %v", f.errorRate)
	case f.maxConcurrent < 0:
		return kairostest.Config{}, usagef("--max-concurrent: must be ≥ 0, got %d", f.maxConcurrent)
	case f.retryAfter < 0:
		return kairostest.Config{}, usagef("--retry-after: must not be negative, got %v", f.retryAfter)
	case f.maxBody <= 0:
		return kairostest.Config{}, usagef("--max-body-bytes: must be positive, got %d", f.maxBody)
	}
	rules := append([]kairostest.Rule(nil), f.rules...)
	if f.sampleRules {
		rules = append(rules, sampleRules()...)
	}
	var outages []kairostest.Outage
	for _, o := range f.outages {
		outages = append(outages, kairostest.Outage{From: start.Add(o.start), To: start.Add(o.start + o.length)})
	}
	cfg := kairostest.Config{
		AppID: f.appID, AppKey: f.appKey, AuthFailureStatus: f.authStatus,
		Latency: f.latency, LatencyJitter: f.jitter, RateLimit: f.rateLimit,
		QuotaTotal: f.quotaTotal, QuotaPeriod: f.quotaPeriod, ErrorRate: f.errorRate,
		Outages: outages, MaxConcurrent: f.maxConcurrent, RetryAfter: f.retryAfter,
		Rules: rules, MaxBodyBytes: int64(f.maxBody), Seed: f.seed,
	}
	if err := cfg.Validate(); err != nil {
		return kairostest.Config{}, usagef("emulator: %v", err)
	}
	return cfg, nil
}

func runEmulator(ctx context.Context, env *environ, args []string) error {
	var c common
	var f emulatorFlags
	fs := newFlagSet(env, "emulator", "[flags]")
	f.register(fs)
	c.registerLogging(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("emulator: unexpected arguments %q", fs.Args())
	}
	logger, err := c.logger(env.stderr)
	if err != nil {
		return err
	}
	start := time.Now()
	cfg, err := f.config(start)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return usagef("--addr: %v", err)
	}
	srv := &http.Server{Handler: kairostest.New(cfg), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	// The one line scripts read: the base URL to give workers as --api-url.
	fmt.Fprintf(env.stdout, "listening on http://%s\n", ln.Addr())
	logger.Info().Str("addr", ln.Addr().String()).Bool("app_key_set", f.appKey != "").Int("rules", len(cfg.Rules)).
		Dur("latency", cfg.Latency).Int("rate_limit", cfg.RateLimit).Float64("error_rate", cfg.ErrorRate).
		Msg("Kairos emulator serving (admin API under /_emulator/)")
	select {
	case err := <-done:
		return fmt.Errorf("emulator: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("emulator: shutdown: %w", err)
	}
	logger.Info().Msg("emulator stopped")
	return nil
}

// ruleList is the repeatable --rule flag.
type ruleList []kairostest.Rule

func (l *ruleList) String() string {
	if l == nil {
		return ""
	}
	parts := make([]string, len(*l))
	for i, r := range *l {
		parts[i] = formatRule(r)
	}
	return strings.Join(parts, ";")
}

// Set adds one rule, or several separated by ';' (as the variable gives them).
func (l *ruleList) Set(s string) error {
	for part := range strings.SplitSeq(s, ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		r, err := parseRule(part)
		if err != nil {
			return err
		}
		*l = append(*l, r)
	}
	return nil
}

// parseRule reads PATTERN=score:0.9, PATTERN=noface or PATTERN=status:422.
func parseRule(s string) (kairostest.Rule, error) {
	pattern, action, ok := strings.Cut(strings.TrimSpace(s), "=")
	if !ok || pattern == "" {
		return kairostest.Rule{}, fmt.Errorf("rule %q: want PATTERN=score:0.9|noface|status:422", s)
	}
	if _, err := path.Match(pattern, ""); err != nil {
		return kairostest.Rule{}, fmt.Errorf("rule %q: bad pattern: %v", s, err)
	}
	r := kairostest.Rule{Pattern: pattern}
	name, arg, _ := strings.Cut(strings.ToLower(strings.TrimSpace(action)), ":")
	switch name {
	case "score":
		v, err := strconv.ParseFloat(arg, 64)
		if err != nil || !(v >= 0 && v <= 1) {
			return kairostest.Rule{}, fmt.Errorf("rule %q: score must be a number in [0, 1]", s)
		}
		r.Score = &v
	case "noface", "no_face":
		r.NoFace = true
	case "status":
		v, err := strconv.Atoi(arg)
		if err != nil || v < 400 || v > 599 {
			return kairostest.Rule{}, fmt.Errorf("rule %q: status must be within 400..599", s)
		}
		r.Status = v
	default:
		return kairostest.Rule{}, fmt.Errorf("rule %q: want PATTERN=score:0.9|noface|status:422", s)
	}
	return r, nil
}

func formatRule(r kairostest.Rule) string {
	switch {
	case r.Score != nil:
		return fmt.Sprintf("%s=score:%v", r.Pattern, *r.Score)
	case r.NoFace:
		return r.Pattern + "=noface"
	default:
		return fmt.Sprintf("%s=status:%d", r.Pattern, r.Status)
	}
}

// outage is an --outage window relative to the emulator's start.
type outage struct{ start, length time.Duration }

// outageList is the repeatable --outage flag.
type outageList []outage

func (l *outageList) String() string {
	if l == nil {
		return ""
	}
	parts := make([]string, len(*l))
	for i, o := range *l {
		parts[i] = fmt.Sprintf("%v+%v", o.start, o.length)
	}
	return strings.Join(parts, ";")
}

// Set adds START+LENGTH windows separated by ';'.
func (l *outageList) Set(s string) error {
	for part := range strings.SplitSeq(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		a, b, ok := strings.Cut(part, "+")
		start, err1 := time.ParseDuration(strings.TrimSpace(a))
		length, err2 := time.ParseDuration(strings.TrimSpace(b))
		if !ok || err1 != nil || err2 != nil || start < 0 || length <= 0 {
			return fmt.Errorf("outage %q: want START+LENGTH from startup, e.g. 30s+10s", part)
		}
		*l = append(*l, outage{start, length})
	}
	return nil
}
