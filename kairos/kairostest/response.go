package kairostest

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// responseCode is the body's response_code, as in the documented sample.
const responseCode = 2

// timeLayout is the documented layout of processed_at and requested_at.
const timeLayout = "2006-01-02 15:04:05"

// bodyPool recycles answer buffers.
var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// setHeaders sets the headers every answer carries.
func (e *Emulator) setHeaders(w http.ResponseWriter, cfg *Config, status, length int) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(length))
	h.Set("X-Request-Id", e.ids.next(0))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Strict-Transport-Security", "max-age=86400; includeSubDomains")
	if status == http.StatusMethodNotAllowed {
		h.Set("Allow", http.MethodPost)
	}
	if cfg.RetryAfter > 0 && (status >= 500 || status == http.StatusForbidden || status == http.StatusTooManyRequests) {
		secs := int64(math.Ceil(cfg.RetryAfter.Seconds()))
		h.Set("Retry-After", strconv.FormatInt(secs, 10))
	}
}

// errorBody is the emulator's error body (our choice; Kairos publishes none).
type errorBody struct {
	Errors []errorEntry `json:"Errors"`
}

type errorEntry struct {
	Message string `json:"Message"`
	ErrCode int    `json:"ErrCode"`
}

// writeError answers a with an error body and returns its status.
func (e *Emulator) writeError(w http.ResponseWriter, cfg *Config, a answer) int {
	b, _ := json.Marshal(errorBody{Errors: []errorEntry{{Message: a.message, ErrCode: a.code}}})
	e.setHeaders(w, cfg, a.status, len(b))
	w.WriteHeader(a.status)
	_, _ = w.Write(b)
	return a.status
}

// writeVerdict answers 200 with the documented JSON and returns 200.
func (e *Emulator) writeVerdict(w http.ResponseWriter, cfg *Config, v *verdict, requestedAt time.Time) int {
	bp := bodyPool.Get().(*[]byte)
	b := appendVerdict((*bp)[:0], v, e.ids.next(1), requestedAt.UTC(), cfg.Now().UTC())
	e.setHeaders(w, cfg, http.StatusOK, len(b))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	*bp = b
	bodyPool.Put(bp)
	return http.StatusOK
}

// appendVerdict appends the documented 200 body, keys in the sample's order, floats with
// four decimals, times as timeLayout.
func appendVerdict(b []byte, v *verdict, uid string, requestedAt, processedAt time.Time) []byte {
	b = append(b, `{"api_req_uid":"`...)
	b = append(b, uid...)
	b = append(b, `","processed_at":"`...)
	b = processedAt.AppendFormat(b, timeLayout)
	b = append(b, `","requested_at":"`...)
	b = requestedAt.AppendFormat(b, timeLayout)
	b = append(b, `","response_code":`...)
	b = strconv.AppendInt(b, responseCode, 10)
	b = append(b, `,"response_data":{"faces_liveness":`...)
	score := v.score
	if v.noFace {
		score = 0
	}
	b = appendFloat4(b, score)
	b = append(b, `,"faces_predicted":[`...)
	if !v.noFace {
		f := faceBox(v.sum, v.width, v.height)
		b = append(b, `{"confidence":`...)
		b = appendFloat4(b, f.confidence)
		b = append(b, `,"delta":{"x":`...)
		b = appendFloat4(b, f.w)
		b = append(b, `,"y":`...)
		b = appendFloat4(b, f.h)
		b = append(b, `},"top_left":{"x":`...)
		b = appendFloat4(b, f.x)
		b = append(b, `,"y":`...)
		b = appendFloat4(b, f.y)
		b = append(b, `}}`...)
	}
	b = append(b, `],"img":{"height":`...)
	b = strconv.AppendInt(b, int64(v.height), 10)
	b = append(b, `,"width":`...)
	b = strconv.AppendInt(b, int64(v.width), 10)
	b = append(b, `}}}`...)
	return b
}

func appendFloat4(b []byte, f float64) []byte { return strconv.AppendFloat(b, f, 'f', 4, 64) }

// unit maps two bytes to [0, 1).
func unit(b []byte) float64 { return float64(binary.BigEndian.Uint16(b)) / (1 << 16) }

// hashScore derives a score in [0, 1] with four decimals from an image hash.
func hashScore(sum [32]byte) float64 {
	u := binary.BigEndian.Uint64(sum[:8]) >> 11 // 53 bits
	return math.Round(float64(u)/(1<<53)*1e4) / 1e4
}

type face struct{ confidence, x, y, w, h float64 }

// faceBox derives a plausible face box for a w x h image from its hash: a box 35-60% of
// the shorter side wide and 1.2 times as tall (within the image), somewhere inside it.
func faceBox(sum [32]byte, w, h int) face {
	short := float64(min(w, h))
	fw := short * (0.35 + 0.25*unit(sum[8:10]))
	fh := math.Min(fw*1.2, float64(h))
	x := (float64(w) - fw) * unit(sum[10:12])
	y := (float64(h) - fh) * unit(sum[12:14])
	conf := 0.9 + 0.0999*unit(sum[14:16])
	r := func(f float64) float64 { return math.Round(f*1e4) / 1e4 }
	return face{confidence: r(conf), x: r(x), y: r(y), w: r(fw), h: r(fh)}
}

// idSource makes unique ids shaped like UUIDs (version 4 layout): a random per-emulator
// prefix and a counter, in two streams (0: X-Request-ID, 1: api_req_uid).
type idSource struct {
	prefix [2]uint64
	n      atomic.Uint64
}

func newIDSource() idSource {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return idSource{prefix: [2]uint64{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}}
}

func (s *idSource) next(stream int) string {
	var raw [16]byte
	binary.BigEndian.PutUint64(raw[:8], s.prefix[stream])
	binary.BigEndian.PutUint64(raw[8:], s.n.Add(1))
	raw[6] = raw[6]&0x0f | 0x40 // version 4
	raw[8] = raw[8]&0x3f | 0x80 // RFC 4122 variant
	var out [36]byte
	hex.Encode(out[0:8], raw[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], raw[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], raw[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], raw[8:10])
	out[23] = '-'
	hex.Encode(out[24:36], raw[10:16])
	return string(out[:])
}
