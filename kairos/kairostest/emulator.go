package kairostest

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults applied by New to zero Config fields.
const (
	// DefaultMaxBodyBytes caps a request body (413 beyond); above the client's 15 MiB cap.
	DefaultMaxBodyBytes = 16 << 20
	// MinSide and MaxSide bound an image's width and height, in pixels.
	MinSide, MaxSide = 300, 5000
	// drainLimit is how much of an unread request body is discarded before an error answer.
	drainLimit = 64 << 20
	// maxThresholdBytes caps the threshold part.
	maxThresholdBytes = 64
)

// Outage is a scheduled window during which every API request is answered 503.
type Outage struct {
	// From is the first instant of the outage, inclusive.
	From time.Time
	// To is the end of the outage, exclusive.
	To time.Time
}

// Rule overrides the verdict for selfies whose file name matches Pattern.
type Rule struct {
	// Pattern is matched with path.Match against the selfie part's file name (its base
	// name), e.g. "*_spoof.jpg".
	Pattern string
	// Score, when set, replaces the hash-derived score (in [0, 1]).
	Score *float64
	// NoFace answers 200 with no face (faces_predicted empty, faces_liveness 0).
	NoFace bool
	// Status, when non-zero (400..599), answers that status with an error body instead of
	// a verdict, after all validation: e.g. 422 to emulate a rejected image.
	Status int
}

// Config configures an Emulator. The zero value accepts any credentials, limits nothing
// and answers at once.
type Config struct {
	// AppID is the accepted app id. Empty accepts any non-empty id.
	AppID string
	// AppKey is the accepted app key, compared in constant time. Empty accepts any
	// non-empty key.
	AppKey string
	// AuthFailureStatus answers missing or wrong credentials: 401 (default) or 403.
	AuthFailureStatus int
	// Latency is how long the API takes to answer a request that passes the checks of
	// its headers (credentials, limits): counted from the request's arrival, so that
	// reading and checking the body happen within it, as on a real API (a body that
	// takes longer to arrive is answered once read). Default 0.
	Latency time.Duration
	// LatencyJitter adds a uniformly random [0, LatencyJitter) to Latency. Default 0.
	LatencyJitter time.Duration
	// RateLimit, when > 0, admits at most this many requests in any sliding 1-second
	// window and answers 403 to the others (which do not count). Default 0: unlimited.
	RateLimit int
	// QuotaTotal, when > 0, admits at most this many requests per QuotaPeriod and answers
	// 403 to the others. Default 0: unlimited.
	QuotaTotal int
	// QuotaPeriod is the length of the quota's fixed periods, counted from New (or the
	// last Reset). Default 0: one period for the emulator's whole life.
	QuotaPeriod time.Duration
	// ErrorRate is the share of requests, in [0, 1], answered 503 at random. Default 0.
	ErrorRate float64
	// Outages are windows answered 503.
	Outages []Outage
	// MaxConcurrent, when > 0, answers 429 to a request arriving while this many are
	// already being served. Default 0: unlimited.
	MaxConcurrent int
	// RetryAfter, when > 0, is sent (rounded up to whole seconds) as Retry-After on 5xx,
	// 403 and 429 answers. Default 0: never sent, as the real API documents none.
	RetryAfter time.Duration
	// Rules override verdicts by file name; the first match wins.
	Rules []Rule
	// MaxBodyBytes caps a request body; larger ones get 413. Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Now is the clock for timestamps, outages, rate windows and quota periods. Default
	// time.Now.
	Now func() time.Time
	// Seed seeds the random draws (latency jitter, error rate). Default 0.
	Seed uint64
}

// Validate reports the first invalid field of cfg (after defaults), or nil.
func (cfg Config) Validate() error {
	cfg = cfg.withDefaults()
	switch {
	case cfg.AuthFailureStatus != http.StatusUnauthorized && cfg.AuthFailureStatus != http.StatusForbidden:
		return fmt.Errorf("kairostest: AuthFailureStatus must be 401 or 403, got %d", cfg.AuthFailureStatus)
	case cfg.Latency < 0, cfg.LatencyJitter < 0, cfg.QuotaPeriod < 0, cfg.RetryAfter < 0:
		return errors.New("kairostest: durations must not be negative")
	case cfg.RateLimit < 0, cfg.QuotaTotal < 0, cfg.MaxConcurrent < 0:
		return errors.New("kairostest: limits must not be negative")
	case !(cfg.ErrorRate >= 0 && cfg.ErrorRate <= 1):
		return fmt.Errorf("kairostest: ErrorRate must be in [0, 1], got %v", cfg.ErrorRate)
	case cfg.MaxBodyBytes < 0:
		return errors.New("kairostest: MaxBodyBytes must not be negative")
	}
	for i, o := range cfg.Outages {
		if !o.To.After(o.From) {
			return fmt.Errorf("kairostest: Outages[%d] ends before it starts", i)
		}
	}
	for i, r := range cfg.Rules {
		if _, err := path.Match(r.Pattern, ""); err != nil {
			return fmt.Errorf("kairostest: Rules[%d].Pattern %q: %w", i, r.Pattern, err)
		}
		if r.Score != nil && !(*r.Score >= 0 && *r.Score <= 1) {
			return fmt.Errorf("kairostest: Rules[%d].Score must be in [0, 1]", i)
		}
		if r.Status != 0 && (r.Status < 400 || r.Status > 599) {
			return fmt.Errorf("kairostest: Rules[%d].Status must be 400..599", i)
		}
	}
	return nil
}

func (cfg Config) withDefaults() Config {
	if cfg.AuthFailureStatus == 0 {
		cfg.AuthFailureStatus = http.StatusUnauthorized
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg
}

// clone returns cfg with its slices copied, so callers cannot change a snapshot.
func (cfg Config) clone() Config {
	cfg.Outages = slices.Clone(cfg.Outages)
	cfg.Rules = slices.Clone(cfg.Rules)
	for i, r := range cfg.Rules {
		if r.Score != nil {
			s := *r.Score
			cfg.Rules[i].Score = &s
		}
	}
	return cfg
}

// settings is an immutable snapshot of what governs answers.
type settings struct {
	cfg    Config
	faults faultState
}

// Emulator is an http.Handler emulating the Kairos liveness-verification API. Its
// methods are safe for concurrent use, also while it serves.
type Emulator struct {
	mu  sync.Mutex // serializes Update, SetFaults, Reset
	cur atomic.Pointer[settings]

	winMu  sync.Mutex // guards the windows below
	epoch  time.Time  // start of quota periods
	rate   slidingWindow
	quota  quotaCounter
	meter  rateMeter
	stats  statsCounters
	rndMu  sync.Mutex
	rnd    *rand.Rand
	ids    idSource
	hashes sync.Pool // of *selfieScanner
}

// New returns an Emulator for cfg after applying defaults. It panics when cfg is invalid
// (see Config.Validate), as httptest does for misuse.
func New(cfg Config) *Emulator {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	cfg = cfg.withDefaults().clone()
	e := &Emulator{
		rnd: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		ids: newIDSource(),
	}
	e.hashes.New = func() any { return newSelfieScanner() }
	e.epoch = cfg.Now()
	e.rate.setLimit(cfg.RateLimit)
	e.cur.Store(&settings{cfg: cfg})
	return e
}

// Config returns a copy of the current configuration.
func (e *Emulator) Config() Config { return e.cur.Load().cfg.clone() }

// Update changes the configuration at runtime: fn edits a copy of the current Config,
// which replaces it if valid (else Update returns the error and nothing changes). Rate
// window and quota counts carry over.
func (e *Emulator) Update(fn func(*Config)) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.cur.Load()
	cfg := old.cfg.clone()
	fn(&cfg)
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults().clone()
	e.winMu.Lock()
	e.rate.setLimit(cfg.RateLimit)
	e.winMu.Unlock()
	e.cur.Store(&settings{cfg: cfg, faults: old.faults})
	return nil
}

// SetFaults replaces the runtime faults with f, its durations counted from now
// (Config.Now). The zero Faults clears them. It returns an error for an invalid f.
func (e *Emulator) SetFaults(f Faults) error {
	if err := f.validate(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.cur.Load()
	e.cur.Store(&settings{cfg: old.cfg, faults: f.state(old.cfg.Now())})
	return nil
}

// ResetStats zeroes the statistics (not the limit windows or faults).
func (e *Emulator) ResetStats() {
	e.winMu.Lock()
	e.meter.reset()
	e.winMu.Unlock()
	e.stats.reset()
}

// Reset clears the faults, the statistics, the rate-limit window and the quota count,
// and starts a new quota period.
func (e *Emulator) Reset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.cur.Load()
	e.cur.Store(&settings{cfg: old.cfg})
	e.winMu.Lock()
	e.rate.clear()
	e.quota = quotaCounter{}
	e.epoch = old.cfg.Now()
	e.winMu.Unlock()
	e.ResetStats()
}

// Stats returns the statistics since New or the last ResetStats.
func (e *Emulator) Stats() Stats {
	e.winMu.Lock()
	maxPerSecond := e.meter.max
	e.winMu.Unlock()
	return e.stats.snapshot(maxPerSecond)
}

// ServeHTTP serves the admin paths under /_emulator/ and the API on every other path.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, adminPrefix) {
		e.serveAdmin(w, r)
		return
	}
	inFlight := e.stats.begin()
	status := e.serveAPI(w, r, inFlight)
	e.stats.end(status)
}

// answer is one API answer: a status, and an error message and code for non-200s.
type answer struct {
	status  int
	code    int
	message string
	limit   bool // a usage-limit denial
}

func (e *Emulator) serveAPI(w http.ResponseWriter, r *http.Request, inFlight int64) int {
	arrived := time.Now()
	st := e.cur.Load()
	cfg := &st.cfg

	e.winMu.Lock()
	now := cfg.Now()
	e.meter.add(now.Sub(e.epoch))
	e.winMu.Unlock()

	if a, ok := e.gate(r, st, now, inFlight); !ok {
		if a.limit {
			e.stats.limitDenials.Add(1)
		}
		drain(r.Body)
		return e.writeError(w, cfg, a)
	}

	v, a, ok := e.readRequest(w, r, cfg)
	if ok {
		a, ok = v.applyRules(cfg.Rules)
	}
	e.wait(r, cfg, arrived)
	if !ok {
		drain(r.Body)
		return e.writeError(w, cfg, a)
	}
	return e.writeVerdict(w, cfg, v, now)
}

// gate runs the checks that precede reading the body: method, credentials, outages,
// concurrency, usage limits, injected errors.
func (e *Emulator) gate(r *http.Request, st *settings, now time.Time, inFlight int64) (answer, bool) {
	cfg := &st.cfg
	if r.Method != http.MethodPost {
		return answer{status: http.StatusMethodNotAllowed, code: 1004, message: "method not allowed; use POST"}, false
	}
	appKey := cfg.AppKey
	if st.faults.appKey != nil {
		appKey = *st.faults.appKey
	}
	if !credentialsOK(r.Header, cfg.AppID, appKey) {
		return answer{status: cfg.AuthFailureStatus, code: 1001, message: "invalid or missing app_id / app_key"}, false
	}
	if now.Before(st.faults.outageUntil) || inOutage(cfg.Outages, now) {
		return answer{status: http.StatusServiceUnavailable, code: 3001, message: "service unavailable"}, false
	}
	if cfg.MaxConcurrent > 0 && inFlight > int64(cfg.MaxConcurrent) {
		return answer{status: http.StatusTooManyRequests, code: 1003, message: "too many concurrent requests"}, false
	}
	if now.Before(st.faults.usageLimitUntil) {
		return answer{status: http.StatusForbidden, code: 1002, message: "usage limit reached", limit: true}, false
	}
	if cfg.RateLimit > 0 || cfg.QuotaTotal > 0 {
		if !e.admit(cfg) {
			return answer{status: http.StatusForbidden, code: 1002, message: "usage limit reached", limit: true}, false
		}
	}
	rate := cfg.ErrorRate
	if now.Before(st.faults.errorRateUntil) {
		rate = st.faults.errorRate
	}
	if rate > 0 && e.float64() < rate {
		return answer{status: http.StatusServiceUnavailable, code: 3001, message: "service unavailable, try again later"}, false
	}
	return answer{}, true
}

// admit applies the sliding-window rate limit and the quota, counting the request
// against both only if both admit it.
func (e *Emulator) admit(cfg *Config) bool {
	e.winMu.Lock()
	defer e.winMu.Unlock()
	t := cfg.Now().Sub(e.epoch)
	if cfg.QuotaTotal > 0 && !e.quota.allow(t, cfg.QuotaPeriod, cfg.QuotaTotal) {
		return false
	}
	if cfg.RateLimit > 0 && !e.rate.allow(t) {
		return false
	}
	if cfg.RateLimit > 0 {
		e.rate.record(t)
	}
	if cfg.QuotaTotal > 0 {
		e.quota.count++
	}
	return true
}

func (e *Emulator) float64() float64 {
	e.rndMu.Lock()
	defer e.rndMu.Unlock()
	return e.rnd.Float64()
}

// wait sleeps until Latency plus jitter after arrived, or until the client goes away.
func (e *Emulator) wait(r *http.Request, cfg *Config, arrived time.Time) {
	d := cfg.Latency
	if cfg.LatencyJitter > 0 {
		d += time.Duration(e.float64() * float64(cfg.LatencyJitter))
	}
	if d <= 0 {
		return
	}
	if d -= time.Since(arrived); d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}

func inOutage(outages []Outage, now time.Time) bool {
	for _, o := range outages {
		if !now.Before(o.From) && now.Before(o.To) {
			return true
		}
	}
	return false
}

// credentialsOK accepts either header spelling. An empty wantID or wantKey accepts any
// non-empty value.
func credentialsOK(h http.Header, wantID, wantKey string) bool {
	id := headerEither(h, "App-Id", "App_id")
	key := headerEither(h, "App-Key", "App_key")
	if id == "" || key == "" {
		return false
	}
	idOK := wantID == "" || subtle.ConstantTimeCompare([]byte(id), []byte(wantID)) == 1
	keyOK := wantKey == "" || subtle.ConstantTimeCompare([]byte(key), []byte(wantKey)) == 1
	return idOK && keyOK
}

// headerEither returns the first value of canonical header a, else of b. Go's server
// canonicalizes "app-id" to "App-Id" and "app_id" to "App_id".
func headerEither(h http.Header, a, b string) string {
	if v := h[a]; len(v) > 0 && v[0] != "" {
		return v[0]
	}
	if v := h[b]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// drain discards what is left of a request body, up to drainLimit.
func drain(body io.Reader) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, drainLimit))
}

// verdict is what the emulator learned from a valid request.
type verdict struct {
	fileName      string
	threshold     float64
	width, height int
	sum           [sha256.Size]byte
	score         float64
	noFace        bool
}

// applyRules applies the first Rule matching the file name: a forced status, score or
// no-face. Without a rule the score comes from the image hash.
func (v *verdict) applyRules(rules []Rule) (answer, bool) {
	v.score = hashScore(v.sum)
	for _, r := range rules {
		if ok, _ := path.Match(r.Pattern, v.fileName); !ok {
			continue
		}
		if r.Status != 0 {
			return answer{status: r.Status, code: 3002, message: "answer forced by an emulator rule"}, false
		}
		if r.Score != nil {
			v.score = *r.Score
		}
		v.noFace = r.NoFace
		break
	}
	return answer{}, true
}

// readRequest parses the multipart body, streaming the selfie through the hash and the
// header decoder.
func (e *Emulator) readRequest(w http.ResponseWriter, r *http.Request, cfg *Config) (*verdict, answer, bool) {
	if r.ContentLength > cfg.MaxBodyBytes {
		return nil, tooLarge(cfg), false
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, badRequest("the body must be multipart/form-data"), false
	}
	// A large buffer under the multipart reader's small one: few, large reads from the
	// connection.
	br := bodyReaders.Get().(*bufio.Reader)
	br.Reset(http.MaxBytesReader(w, r.Body, cfg.MaxBodyBytes))
	defer func() {
		br.Reset(nil)
		bodyReaders.Put(br)
	}()
	mr := multipart.NewReader(br, params["boundary"])
	v := &verdict{threshold: math.NaN()}
	var haveThreshold, haveSelfie bool
	var selfieAnswer *answer
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, bodyError(err, cfg), false
		}
		switch part.FormName() {
		case "threshold":
			if haveThreshold {
				return nil, badRequest("threshold given twice"), false
			}
			haveThreshold = true
			b, err := io.ReadAll(io.LimitReader(part, maxThresholdBytes+1))
			if err != nil {
				return nil, bodyError(err, cfg), false
			}
			if t, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64); err == nil && len(b) <= maxThresholdBytes {
				v.threshold = t
			}
		case "selfie":
			if haveSelfie {
				return nil, badRequest("selfie given twice"), false
			}
			haveSelfie = true
			v.fileName = part.FileName()
			if a, ok := e.scanSelfie(part, v); !ok {
				if a.status == 0 { // the body failed while reading
					return nil, bodyError(a.err, cfg), false
				}
				selfieAnswer = &a.answer
			}
		default:
			if _, err := io.Copy(io.Discard, part); err != nil {
				return nil, bodyError(err, cfg), false
			}
		}
	}
	switch {
	case !haveThreshold:
		return nil, badRequest("threshold is required"), false
	case !(v.threshold >= 0 && v.threshold <= 1):
		return nil, badRequest("threshold must be a number in [0, 1]"), false
	case !haveSelfie:
		return nil, badRequest("selfie is required"), false
	case selfieAnswer != nil:
		return nil, *selfieAnswer, false
	}
	return v, answer{}, true
}

// bodyReaders recycles the request body buffers.
var bodyReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 64<<10) }}

func badRequest(msg string) answer {
	return answer{status: http.StatusBadRequest, code: 2001, message: msg}
}

func tooLarge(cfg *Config) answer {
	return answer{status: http.StatusRequestEntityTooLarge, code: 2003,
		message: "request body larger than " + strconv.FormatInt(cfg.MaxBodyBytes, 10) + " bytes"}
}

// bodyError answers a failure while reading the body: 413 past the cap, else 400.
func bodyError(err error, cfg *Config) answer {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return tooLarge(cfg)
	}
	return badRequest("malformed multipart body")
}

// scanResult is the outcome of scanning the selfie part: ok, an answer, or a body read
// error (status 0).
type scanResult struct {
	answer
	err error
}

// selfieScanner hashes a selfie part while its header is decoded; pooled.
type selfieScanner struct {
	h  hash.Hash
	br *bufio.Reader
	tr hashingReader
}

// hashingReader feeds every byte read from r into h.
type hashingReader struct {
	r io.Reader
	h hash.Hash
}

func (t *hashingReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.h.Write(p[:n])
	}
	return n, err
}

func newSelfieScanner() any {
	s := &selfieScanner{h: sha256.New()}
	s.tr.h = s.h
	s.br = bufio.NewReaderSize(&s.tr, 16<<10)
	return s
}

var (
	jpegMagic = []byte{0xff, 0xd8, 0xff}
	pngMagic  = []byte("\x89PNG\r\n\x1a\n")
)

// scanSelfie streams the selfie part: sniffs the format, decodes the header only, hashes
// every byte. It never holds more than a buffer of the image.
func (e *Emulator) scanSelfie(part io.Reader, v *verdict) (scanResult, bool) {
	s := e.hashes.Get().(*selfieScanner)
	defer func() {
		s.tr.r = nil
		s.br.Reset(&s.tr)
		e.hashes.Put(s)
	}()
	s.h.Reset()
	s.tr.r = part
	s.br.Reset(&s.tr)

	head, _ := s.br.Peek(len(pngMagic))
	var res scanResult
	var w, h int
	switch {
	case len(head) >= len(jpegMagic) && string(head[:len(jpegMagic)]) == string(jpegMagic):
		c, err := jpeg.DecodeConfig(s.br)
		if err != nil {
			res.answer = badRequest("cannot read the JPEG header")
		}
		w, h = c.Width, c.Height
	case len(head) == len(pngMagic) && string(head) == string(pngMagic):
		c, err := png.DecodeConfig(s.br)
		if err != nil {
			res.answer = badRequest("cannot read the PNG header")
		}
		w, h = c.Width, c.Height
	default:
		res.answer = answer{status: http.StatusUnsupportedMediaType, code: 2002, message: "the selfie must be a JPEG or PNG image"}
	}
	// Hash the rest: the bufio buffer and what follows it.
	if _, err := s.br.WriteTo(io.Discard); err != nil {
		return scanResult{err: err}, false
	}
	if res.status != 0 {
		return res, false
	}
	if w < MinSide || h < MinSide || w > MaxSide || h > MaxSide {
		res.answer = answer{status: http.StatusBadRequest, code: 2004, message: fmt.Sprintf(
			"image is %dx%d px; width and height must each be between %d and %d px", w, h, MinSide, MaxSide)}
		return res, false
	}
	v.width, v.height = w, h
	s.h.Sum(v.sum[:0])
	return res, true
}
