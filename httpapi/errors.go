package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/livenessq/livenessq/enqueue"
)

// Errors returned by this package; callers use errors.Is.
var (
	// ErrInvalidTokens: the token list (LIVENESSQ_API_TOKENS) is malformed. The message
	// names the entry, never its token.
	ErrInvalidTokens = errors.New("httpapi: invalid API tokens")
	// ErrInvalidCallbackURL: a callback URL is not an absolute http(s) URL, carries
	// credentials, or does not resolve.
	ErrInvalidCallbackURL = errors.New("invalid callback URL")
	// ErrCallbackAddress: a callback URL's host is, or resolves to, an address callbacks
	// may not reach (loopback, private, link-local, ...) while private addresses are not
	// allowed.
	ErrCallbackAddress = errors.New("callback address not allowed")
	// ErrInvalidKey: a key the API refuses (see CheckKey). It is enqueue.ErrBadKey, so
	// that either name matches every refused key.
	ErrInvalidKey = enqueue.ErrBadKey
)

// The error codes of the API's error bodies, {"error": {"code": ..., "message": ...}}.
// They are a contract: clients branch on them, so they never change meaning.
const (
	CodeInvalidRequest     = "invalid_request"      // 400: malformed JSON, unknown field, bad parameter
	CodeInvalidKey         = "invalid_key"          // 400
	CodeInvalidThreshold   = "invalid_threshold"    // 400
	CodeInvalidBatchID     = "invalid_batch_id"     // 400
	CodeInvalidCallbackURL = "invalid_callback_url" // 400: bad URL or a refused address
	CodeCallbacksDisabled  = "callbacks_disabled"   // 400: no webhook secret configured
	CodeUnauthorized       = "unauthorized"         // 401
	CodeNotFound           = "not_found"            // 404: no such batch, result or route
	CodeMethodNotAllowed   = "method_not_allowed"   // 405
	CodeBodyTooLarge       = "body_too_large"       // 413
	CodeUnsupportedMedia   = "unsupported_media_type"
	CodeRateLimited        = "rate_limited"  // 429, with Retry-After
	CodeInternal           = "internal"      // 500
	CodeUnavailable        = "unavailable"   // 503: Redis or storage unreachable
	CodeShuttingDown       = "shutting_down" // 503: the server is stopping
)

// apiError is one error answer.
type apiError struct {
	status  int
	code    string
	message string
}

// errorBody is the JSON shape of every error answer.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func newError(status int, code, message string) *apiError {
	return &apiError{status: status, code: code, message: message}
}

// writeError answers e as JSON.
func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, errorBody{Error: errorDetail{Code: e.code, Message: e.message}})
}

// writeRetryable answers e with a Retry-After of d (rounded up to whole seconds, at
// least one).
func writeRetryable(w http.ResponseWriter, e *apiError, d time.Duration) {
	secs := int64((d + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	writeError(w, e)
}

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"cannot encode the answer"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
