package kairos

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status int
		want   error
	}{
		{400, ErrRejected}, {413, ErrRejected}, {415, ErrRejected}, {422, ErrRejected},
		{401, ErrUnauthorized}, {404, ErrUnauthorized}, {405, ErrUnauthorized}, {407, ErrUnauthorized}, {418, ErrUnauthorized},
		{403, ErrUsageLimit},
		{429, ErrRateLimited},
		{408, ErrServer}, {500, ErrServer}, {502, ErrServer}, {503, ErrServer}, {504, ErrServer}, {599, ErrServer},
		{100, ErrBadResponse}, {201, ErrBadResponse}, {204, ErrBadResponse}, {302, ErrBadResponse}, {600, ErrBadResponse},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			t.Parallel()
			err := error(&APIError{StatusCode: tc.status, kind: classify(tc.status)})
			require.ErrorIs(t, err, tc.want)
			for _, other := range []error{ErrRejected, ErrUnauthorized, ErrUsageLimit, ErrRateLimited, ErrServer, ErrBadResponse} {
				if other != tc.want {
					require.NotErrorIs(t, err, other)
				}
			}
		})
	}
}

func TestIsRetryable(t *testing.T) {
	t.Parallel()
	api := func(status int) error { return &APIError{StatusCode: status, kind: classify(status)} }
	for _, tc := range []struct {
		desc string
		err  error
		want bool
	}{
		{desc: "nil", err: nil, want: false},
		{desc: "500", err: api(500), want: true},
		{desc: "503 wrapped", err: fmt.Errorf("verify x: %w", api(503)), want: true},
		{desc: "429", err: api(429), want: true},
		{desc: "bad 200", err: badResponse("not JSON"), want: true},
		{desc: "transport", err: fmt.Errorf("%w: %w", ErrTransport, context.DeadlineExceeded), want: true},
		{desc: "selfie read", err: fmt.Errorf("%w: reset", ErrSelfieRead), want: true},
		{desc: "403 usage limit", err: api(403), want: false},
		{desc: "401", err: api(401), want: false},
		{desc: "404", err: api(404), want: false},
		{desc: "400", err: api(400), want: false},
		{desc: "415", err: api(415), want: false},
		{desc: "invalid threshold", err: ErrInvalidThreshold, want: false},
		{desc: "invalid selfie", err: ErrInvalidSelfie, want: false},
		{desc: "foreign error", err: errors.New("something else"), want: false},
		{desc: "context canceled alone", err: context.Canceled, want: false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, IsRetryable(tc.err))
		})
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("wrapped: %w", &APIError{StatusCode: 503, RetryAfter: 7 * time.Second, kind: ErrServer})
	require.Equal(t, 7*time.Second, RetryAfter(err))
	require.Zero(t, RetryAfter(ErrTransport))
	require.Zero(t, RetryAfter(nil))
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2024, 4, 1, 20, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-5", 0},
		{"7", 7 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"99999999999999999", maxRetryAfter},
		{"1.5", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{now.Add(1000 * time.Hour).Format(http.TimeFormat), maxRetryAfter},
	} {
		require.Equal(t, tc.want, parseRetryAfter(tc.in, now), "%q", tc.in)
	}
}

func TestErrorMessage(t *testing.T) {
	t.Parallel()
	const key = "the-secret-key"
	for _, tc := range []struct {
		desc string
		body string
		want string
	}{
		{desc: "emulator shape", body: `{"Errors":[{"Message":"image too small","ErrCode":2004}]}`, want: "image too small"},
		{desc: "message", body: `{"message":"quota"}`, want: "quota"},
		{desc: "error string", body: `{"error":"nope"}`, want: "nope"},
		{desc: "error object", body: `{"error":{"code":1}}`, want: ""},
		{desc: "plain text first line", body: "Forbidden\nmore detail", want: "Forbidden"},
		{desc: "html", body: "<html><h1>503</h1></html>", want: ""},
		{desc: "empty", body: "", want: ""},
		{desc: "binary", body: "\xff\xfe\x00", want: ""},
		{desc: "control characters", body: `{"message":"a\u0000b\tc"}`, want: "a b c"},
		{desc: "the key is removed", body: `{"message":"bad key the-secret-key for app"}`, want: "bad key [redacted] for app"},
		{desc: "long", body: `{"message":"` + strings.Repeat("é", 300) + `"}`, want: strings.Repeat("é", 128) + "..."},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, errorMessage([]byte(tc.body), key))
		})
	}
}

func TestAPIErrorString(t *testing.T) {
	t.Parallel()
	err := &APIError{StatusCode: 503, RetryAfter: 2 * time.Second, Message: "down", RequestID: "r-1", kind: ErrServer}
	require.Equal(t, "kairos: server error (status 503, request id r-1, retry after 2s): down", err.Error())
	require.Equal(t, "kairos: rate limited (status 429)", (&APIError{StatusCode: 429, kind: ErrRateLimited}).Error())
	var ae *APIError
	require.ErrorAs(t, fmt.Errorf("x: %w", err), &ae)
	require.Equal(t, "r-1", ae.RequestID)
}
