package kairos

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Errors callers branch on with errors.Is. See IsRetryable for which are worth a retry.
var (
	// ErrUsageLimit: the API answered 403, which the contract treats as "a usage limit was
	// reached" (it may also be a credentials problem). A state of the whole service: stop
	// calling the API, cool down, then probe.
	ErrUsageLimit = errors.New("kairos: usage limit reached")
	// ErrRateLimited: the API answered 429. RetryAfter gives the server's delay, if sent.
	ErrRateLimited = errors.New("kairos: rate limited")
	// ErrUnauthorized: the API answered 401, or another 4xx that is not a usage limit, a
	// rate limit or an image rejection (e.g. 404 from a wrong base URL). Every other request
	// would fail the same way: the run should stop.
	ErrUnauthorized = errors.New("kairos: unauthorized")
	// ErrRejected: the API refused this image (400, 413, 415 or 422). Sending it again will
	// not help. The APIError carries the server's message when it sent one.
	ErrRejected = errors.New("kairos: image rejected")
	// ErrServer: the API answered 5xx (or 408). "Try again later."
	ErrServer = errors.New("kairos: server error")
	// ErrBadResponse: the API answered 200 with a body that is not the documented JSON, or
	// answered with a status the contract does not describe (1xx, 2xx other than 200, 3xx).
	ErrBadResponse = errors.New("kairos: bad response")
	// ErrTransport: no complete answer was received: connection refused or reset, TLS
	// failure, timeout, context ended, body cut short.
	ErrTransport = errors.New("kairos: transport error")
	// ErrSelfieRead: reading Selfie.Body failed during the upload, or it did not hold
	// exactly Selfie.Size bytes. The reader's own error is wrapped too.
	ErrSelfieRead = errors.New("kairos: reading the selfie failed")
	// ErrInvalidThreshold: the threshold is NaN or outside [0, 1]. No request was made.
	ErrInvalidThreshold = errors.New("kairos: threshold must be a number in [0, 1]")
	// ErrInvalidSelfie: the selfie cannot be sent (nil Body, negative Size, a content type
	// or name with control characters). No request was made.
	ErrInvalidSelfie = errors.New("kairos: invalid selfie")
)

// maxRetryAfter caps a server's Retry-After so that a hostile or broken value cannot park
// a worker for days.
const maxRetryAfter = 24 * time.Hour

// APIError is an answer from the API with a status code other than a parseable 200.
// errors.Is(err, sentinel) matches the sentinel for its class (ErrUsageLimit, ...), and
// errors.As gives access to the fields.
type APIError struct {
	// StatusCode is the HTTP status of the answer.
	StatusCode int
	// RetryAfter is the delay the server asked for in a Retry-After header (seconds or an
	// HTTP date), 0 when absent, unparseable or in the past; capped at 24 h.
	RetryAfter time.Duration
	// Message is the server's error message when the body held one (JSON
	// {"Errors":[{"Message":...}]}, {"message":...}, {"error":...}, or short plain text),
	// sanitized, truncated to 256 bytes and with the app key removed. May be empty.
	Message string
	// RequestID is the answer's X-Request-ID header, may be empty.
	RequestID string

	kind error // the sentinel
}

// Error describes the answer: class, status, request id and message. It never contains
// the app key.
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString(e.kind.Error())
	b.WriteString(" (status ")
	b.WriteString(strconv.Itoa(e.StatusCode))
	if e.RequestID != "" {
		b.WriteString(", request id ")
		b.WriteString(e.RequestID)
	}
	if e.RetryAfter > 0 {
		b.WriteString(", retry after ")
		b.WriteString(e.RetryAfter.String())
	}
	b.WriteString(")")
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// Unwrap returns the class sentinel (ErrUsageLimit, ErrRejected, ...).
func (e *APIError) Unwrap() error { return e.kind }

// Is reports whether target is the class sentinel of e.
func (e *APIError) Is(target error) bool { return target == e.kind }

// classify maps an HTTP status other than 200 to its sentinel.
func classify(status int) error {
	switch {
	case status == http.StatusForbidden:
		return ErrUsageLimit
	case status == http.StatusTooManyRequests:
		return ErrRateLimited
	case status == http.StatusBadRequest, status == http.StatusRequestEntityTooLarge,
		status == http.StatusUnsupportedMediaType, status == http.StatusUnprocessableEntity:
		return ErrRejected
	case status == http.StatusRequestTimeout, status >= 500 && status <= 599:
		return ErrServer
	case status >= 400 && status <= 499:
		return ErrUnauthorized
	}
	return ErrBadResponse
}

// IsRetryable reports whether sending the same request again later may succeed, and so
// whether a task's own retry policy should retry it. It is true for ErrServer,
// ErrRateLimited, ErrTransport, ErrSelfieRead and ErrBadResponse (a malformed 200 is most
// often a truncated or proxy-substituted answer; the retry policy's attempt cap bounds the
// cost).
//
// It is false for ErrUsageLimit and ErrUnauthorized: those are states of the whole
// service, not of one request, and callers must check them first (errors.Is) and cool
// down or stop instead of burning retries. It is false for ErrRejected,
// ErrInvalidThreshold, ErrInvalidSelfie, nil, and any error this package did not return.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrUsageLimit) || errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrRejected) {
		return false
	}
	return errors.Is(err, ErrServer) || errors.Is(err, ErrRateLimited) ||
		errors.Is(err, ErrTransport) || errors.Is(err, ErrSelfieRead) || errors.Is(err, ErrBadResponse)
}

// RetryAfter returns the delay the server asked for with Retry-After on the answer that
// caused err (any status), or 0 when err carries none.
func RetryAfter(err error) time.Duration {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.RetryAfter
	}
	return 0
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date relative to
// now. It returns 0 for an absent, unparseable or past value and caps it at maxRetryAfter.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs >= int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	d := t.Sub(now)
	if d <= 0 {
		return 0
	}
	return min(d, maxRetryAfter)
}

// maxMessageLen caps APIError.Message.
const maxMessageLen = 256

// errorMessage extracts a human-readable message from an error body: the JSON shapes
// {"Errors":[{"Message":...}]}, {"message":...} or {"error":...}, else the first line of a
// short plain-text body. It returns "" when there is nothing usable. secret, when not
// empty, is removed from the message.
func errorMessage(body []byte, secret string) string {
	msg := jsonErrorMessage(body)
	if msg == "" {
		msg = textErrorMessage(body)
	}
	if secret != "" {
		msg = strings.ReplaceAll(msg, secret, redacted)
	}
	return sanitizeMessage(msg)
}

func jsonErrorMessage(body []byte) string {
	trimmed := strings.TrimSpace(string(body))
	if !strings.HasPrefix(trimmed, "{") {
		return ""
	}
	var v struct {
		Errors []struct {
			Message string `json:"Message"`
		} `json:"Errors"`
		Message string `json:"message"`
		Error   any    `json:"error"`
	}
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	for _, e := range v.Errors {
		if e.Message != "" {
			return e.Message
		}
	}
	if v.Message != "" {
		return v.Message
	}
	if s, ok := v.Error.(string); ok {
		return s
	}
	return ""
}

func textErrorMessage(body []byte) string {
	if len(body) == 0 || len(body) > 4096 || !utf8.Valid(body) {
		return ""
	}
	s := strings.TrimSpace(string(body))
	if strings.HasPrefix(s, "<") || strings.HasPrefix(s, "{") || strings.HasPrefix(s, "[") {
		return "" // HTML pages and unknown JSON say nothing useful in one line
	}
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// sanitizeMessage replaces control characters and invalid UTF-8 with spaces, trims, and
// truncates to maxMessageLen bytes on a rune boundary.
func sanitizeMessage(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > maxMessageLen {
		cut := maxMessageLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}
