package main

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/httpapi"
	"github.com/livenessq/livenessq/internal/testenv"
)

const (
	serveToken  = "serve-test-token-5c1d9e0f7a3b"
	serveSecret = "serve-test-webhook-secret-2e8f"
)

// serveEnv returns a getenv over vars.
func serveEnv(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestServeRefusesBadConfiguration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		vars map[string]string
		args []string
		want string
	}{
		{desc: "no tokens", vars: map[string]string{}, want: "LIVENESSQ_API_TOKENS"},
		{desc: "a short token", vars: map[string]string{"LIVENESSQ_API_TOKENS": "ci:abc123xyz"}, want: "shorter than 16"},
		{desc: "a short webhook secret", vars: map[string]string{"LIVENESSQ_API_TOKENS": "ci:" + serveToken, "LIVENESSQ_WEBHOOK_SECRET": "abc123xyz"}, want: "LIVENESSQ_WEBHOOK_SECRET"},
		{desc: "bad threshold", vars: map[string]string{"LIVENESSQ_API_TOKENS": "ci:" + serveToken}, args: []string{"--threshold", "2"}, want: "--threshold"},
		{desc: "negative rate", vars: map[string]string{"LIVENESSQ_API_TOKENS": "ci:" + serveToken, "LIVENESSQ_API_RATE": "-1"}, want: "--api-rate"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr testenv.Buffer
			code := run(context.Background(), append([]string{"serve"}, tt.args...), serveEnv(tt.vars), strings.NewReader(""), &stdout, &stderr)
			require.Equal(t, 2, code, "stderr: %s", stderr.String())
			require.Contains(t, stderr.String(), tt.want)
			for _, secret := range []string{"abc123xyz", serveToken} {
				require.NotContains(t, stdout.String()+stderr.String(), secret)
			}
		})
	}
}

// `livenessq serve` on real Redis and a local storage directory: it serves the API with
// the token from the environment, and stops cleanly on cancellation (SIGTERM).
func TestServeServesAndStops(t *testing.T) {
	_, redisURL := cmdRedis(t)
	vars := map[string]string{
		"LIVENESSQ_API_TOKENS":     "ci:" + serveToken,
		"LIVENESSQ_WEBHOOK_SECRET": serveSecret,
		"LIVENESSQ_REDIS_URL":      redisURL,
		"LIVENESSQ_STORAGE_URL":    t.TempDir(),
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testenv.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--http-addr", "127.0.0.1:0", "--log-format", "json"}, serveEnv(vars), strings.NewReader(""), &stdout, &stderr)
	}()

	re := regexp.MustCompile(`"addr":"([^"]+)".*"message":"http api listening"`)
	var base string
	deadline := time.Now().Add(20 * time.Second)
	for base == "" {
		if m := re.FindStringSubmatch(stderr.String()); m != nil {
			base = "http://" + m[1]
			break
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited with %d before listening\n%s", code, stderr.String())
		default:
		}
		require.True(t, time.Now().Before(deadline), "serve not listening after 20s\n%s", stderr.String())
		time.Sleep(20 * time.Millisecond)
	}

	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	do := func(method, path, token, body string) (int, string) {
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, body := do("GET", "/healthz", "", "")
	require.Equal(t, http.StatusOK, code, body)
	code, body = do("GET", "/v1/openapi.json", "", "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, string(httpapi.OpenAPI()), body)
	code, _ = do("POST", "/v1/verifications", "", `{"key":"a.jpg"}`)
	require.Equal(t, http.StatusUnauthorized, code)
	code, body = do("POST", "/v1/verifications", serveToken, `{"key":"a.jpg"}`)
	require.Equal(t, http.StatusAccepted, code, body)
	require.Contains(t, body, `"batch_id":"api-`)
	code, body = do("GET", "/v1/results/a.jpg", serveToken, "")
	require.Equal(t, http.StatusNotFound, code, body)

	cancel()
	select {
	case code := <-done:
		require.Equal(t, 0, code, "stderr: %s", stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not stop\n%s", stderr.String())
	}
	out := stdout.String() + stderr.String()
	require.Contains(t, out, `"token":"ci"`)
	require.NotContains(t, out, serveToken)
	require.NotContains(t, out, serveSecret)
}
