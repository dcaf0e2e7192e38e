package kairostest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/livenessq/livenessq/kairos"
	"github.com/livenessq/livenessq/kairos/kairostest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testAppID  = "test-app"
	testAppKey = "s3cr3t-emulator-key"
)

// testBundle is an emulator served over real HTTP.
type testBundle struct {
	emu    *kairostest.Emulator
	srv    *httptest.Server
	url    string // the API URL
	client *http.Client
}

func setup(t *testing.T, cfg kairostest.Config) *testBundle {
	t.Helper()
	if cfg.AppID == "" && cfg.AppKey == "" {
		cfg.AppID, cfg.AppKey = testAppID, testAppKey
	}
	emu := kairostest.New(cfg)
	srv := httptest.NewServer(emu)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Close()
	})
	return &testBundle{emu: emu, srv: srv, url: srv.URL + "/v0.2/liveness-verification", client: &http.Client{Transport: tr}}
}

// fakeClock is a settable Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2024, 4, 1, 20, 5, 17, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *fakeClock) Add(d time.Duration) { c.Set(c.Now().Add(d)) }

// apiRequest describes one raw request to the API, built with mime/multipart so that
// these tests do not depend on the kairos client.
type apiRequest struct {
	method     string // default POST
	id, key    string // default the test credentials; "-" omits the header
	underscore bool   // app_id/app_key spelling
	threshold  string // default "0.6"; "-" omits the part
	selfie     []byte // default a valid 640x480 JPEG; nil with noSelfie omits the part
	noSelfie   bool
	name       string // default "selfie.jpg"
	rawBody    []byte // sent as is with rawType instead of the multipart body
	rawType    string
}

type apiResponse struct {
	status int
	header http.Header
	body   []byte
}

var defaultSelfie = kairostest.JPEG(640, 480, 1)

func (b *testBundle) do(t *testing.T, r apiRequest) apiResponse {
	t.Helper()
	return doRequest(t, b.client, b.url, r)
}

func doRequest(t *testing.T, client *http.Client, url string, r apiRequest) apiResponse {
	t.Helper()
	body, ctype := r.rawBody, r.rawType
	if body == nil {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		threshold := r.threshold
		if threshold == "" {
			threshold = "0.6"
		}
		if threshold != "-" {
			require.NoError(t, mw.WriteField("threshold", threshold))
		}
		if !r.noSelfie {
			selfie, name := r.selfie, r.name
			if selfie == nil {
				selfie = defaultSelfie
			}
			if name == "" {
				name = "selfie.jpg"
			}
			w, err := mw.CreateFormFile("selfie", name)
			require.NoError(t, err)
			_, err = w.Write(selfie)
			require.NoError(t, err)
		}
		require.NoError(t, mw.Close())
		body, ctype = buf.Bytes(), mw.FormDataContentType()
	}
	method := r.method
	if method == "" {
		method = http.MethodPost
	}
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", ctype)
	idName, keyName := "app-id", "app-key"
	if r.underscore {
		idName, keyName = "app_id", "app_key"
	}
	id, key := r.id, r.key
	if id == "" {
		id = testAppID
	}
	if key == "" {
		key = testAppKey
	}
	if id != "-" {
		req.Header[idName] = []string{id}
	}
	if key != "-" {
		req.Header[keyName] = []string{key}
	}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return apiResponse{status: resp.StatusCode, header: resp.Header, body: b}
}

// errorMessage decodes the emulator's error body.
func errorMessage(t *testing.T, body []byte) (string, int) {
	t.Helper()
	var e struct {
		Errors []struct {
			Message string
			ErrCode int
		}
	}
	require.NoError(t, json.Unmarshal(body, &e), "error body %s", body)
	require.Len(t, e.Errors, 1)
	return e.Errors[0].Message, e.Errors[0].ErrCode
}

// verdictBody is the documented 200 body.
type verdictBody struct {
	APIReqUID    string `json:"api_req_uid"`
	ProcessedAt  string `json:"processed_at"`
	RequestedAt  string `json:"requested_at"`
	ResponseCode int    `json:"response_code"`
	ResponseData struct {
		FacesLiveness  float64 `json:"faces_liveness"`
		FacesPredicted []struct {
			Confidence float64 `json:"confidence"`
			Delta      struct{ X, Y float64 }
			TopLeft    struct{ X, Y float64 } `json:"top_left"`
		} `json:"faces_predicted"`
		Img struct{ Height, Width int } `json:"img"`
	} `json:"response_data"`
}

func decodeVerdict(t *testing.T, body []byte) verdictBody {
	t.Helper()
	var v verdictBody
	require.NoError(t, json.Unmarshal(body, &v), "body %s", body)
	return v
}

func TestEmulatorStatuses(t *testing.T) {
	t.Parallel()
	b := setup(t, kairostest.Config{
		MaxBodyBytes: 1 << 20,
		Rules: []kairostest.Rule{
			{Pattern: "*_reject.jpg", Status: http.StatusUnprocessableEntity},
		},
	})
	for _, tc := range []struct {
		desc    string
		req     apiRequest
		status  int
		message string // a substring of the error message
	}{
		{desc: "valid, hyphen headers", req: apiRequest{}, status: 200},
		{desc: "valid, underscore headers", req: apiRequest{underscore: true}, status: 200},
		{desc: "valid png", req: apiRequest{selfie: kairostest.PNG(300, 300, 1), name: "a.png"}, status: 200},
		{desc: "largest sides", req: apiRequest{selfie: kairostest.JPEG(5000, 300, 1)}, status: 200},
		{desc: "threshold 0", req: apiRequest{threshold: "0"}, status: 200},
		{desc: "threshold 1", req: apiRequest{threshold: "1"}, status: 200},
		{desc: "GET", req: apiRequest{method: http.MethodGet}, status: 405, message: "POST"},
		{desc: "PUT", req: apiRequest{method: http.MethodPut}, status: 405, message: "POST"},
		{desc: "no app id", req: apiRequest{id: "-"}, status: 401},
		{desc: "no app key", req: apiRequest{key: "-"}, status: 401},
		{desc: "wrong app key", req: apiRequest{key: "wrong"}, status: 401},
		{desc: "wrong app key, underscore", req: apiRequest{key: "wrong", underscore: true}, status: 401},
		{desc: "wrong app id", req: apiRequest{id: "other"}, status: 401},
		{desc: "threshold missing", req: apiRequest{threshold: "-"}, status: 400, message: "threshold"},
		{desc: "threshold not a number", req: apiRequest{threshold: "abc"}, status: 400, message: "threshold"},
		{desc: "threshold above 1", req: apiRequest{threshold: "1.5"}, status: 400, message: "threshold"},
		{desc: "threshold negative", req: apiRequest{threshold: "-0.1"}, status: 400, message: "threshold"},
		{desc: "threshold NaN", req: apiRequest{threshold: "NaN"}, status: 400, message: "threshold"},
		{desc: "selfie missing", req: apiRequest{noSelfie: true}, status: 400, message: "selfie"},
		{desc: "gif", req: apiRequest{selfie: []byte("GIF89a\x01\x00\x01\x00")}, status: 415, message: "JPEG or PNG"},
		{desc: "empty selfie", req: apiRequest{selfie: []byte{}}, status: 415},
		{desc: "corrupt jpeg header", req: apiRequest{selfie: []byte("\xff\xd8\xff\xe0garbage")}, status: 400, message: "JPEG header"},
		{desc: "too narrow", req: apiRequest{selfie: kairostest.JPEG(299, 600, 1)}, status: 400, message: "299x600"},
		{desc: "too tall", req: apiRequest{selfie: kairostest.PNG(300, 5001, 1)}, status: 400, message: "300x5001"},
		{desc: "not multipart", req: apiRequest{rawBody: []byte(`{"threshold":0.6}`), rawType: "application/json"}, status: 400, message: "multipart"},
		{desc: "broken multipart", req: apiRequest{rawBody: []byte("--x\r\nnonsense"), rawType: "multipart/form-data; boundary=x"}, status: 400},
		{desc: "body over the cap", req: apiRequest{selfie: kairostest.JPEGSized(600, 600, 1, 2<<20)}, status: 413},
		{desc: "rule status", req: apiRequest{name: "x_reject.jpg"}, status: 422},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			resp := b.do(t, tc.req)
			require.Equal(t, tc.status, resp.status, "body %s", resp.body)
			require.Equal(t, "application/json", resp.header.Get("Content-Type"))
			require.NotEmpty(t, resp.header.Get("X-Request-ID"))
			if tc.status == 405 {
				require.Equal(t, "POST", resp.header.Get("Allow"))
			}
			if tc.status != 200 {
				msg, code := errorMessage(t, resp.body)
				require.NotZero(t, code)
				require.Contains(t, msg, tc.message)
				require.NotContains(t, string(resp.body), testAppKey)
			}
		})
	}
}

func TestEmulatorAuthFailureStatus403(t *testing.T) {
	t.Parallel()
	b := setup(t, kairostest.Config{AuthFailureStatus: http.StatusForbidden})
	require.Equal(t, 403, b.do(t, apiRequest{key: "wrong"}).status)
	require.Equal(t, 200, b.do(t, apiRequest{}).status)
	require.Zero(t, b.emu.Stats().LimitDenials, "a credentials 403 is not a limit denial")
}

func TestEmulatorAnyCredentials(t *testing.T) {
	t.Parallel()
	emu := kairostest.New(kairostest.Config{})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	require.Equal(t, 200, doRequest(t, client, srv.URL, apiRequest{id: "anything", key: "at-all"}).status)
	require.Equal(t, 401, doRequest(t, client, srv.URL, apiRequest{key: "-"}).status)
}

func TestEmulatorHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t, kairostest.Config{})
	seen := map[string]bool{}
	for _, req := range []apiRequest{{}, {}, {key: "wrong"}, {threshold: "2"}} {
		resp := b.do(t, req)
		h := resp.header
		require.Equal(t, "application/json", h.Get("Content-Type"))
		require.Equal(t, fmt.Sprint(len(resp.body)), h.Get("Content-Length"))
		require.Equal(t, "nosniff", h.Get("X-Content-Type-Options"))
		require.Equal(t, "DENY", h.Get("X-Frame-Options"))
		require.Equal(t, "max-age=86400; includeSubDomains", h.Get("Strict-Transport-Security"))
		id := h.Get("X-Request-ID")
		require.Regexp(t, uuidRE, id)
		require.False(t, seen[id], "X-Request-ID %s repeated", id)
		seen[id] = true
		require.Empty(t, h.Get("Retry-After"), "not configured")
	}
}

var (
	uuidRE  = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	timeRE  = regexp.MustCompile(`^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$`)
	float4  = regexp.MustCompile(`^-?\d+\.\d{4}$`)
	integer = regexp.MustCompile(`^-?\d+$`)
)

// TestEmulatorContract checks the 200 body against the documented sample field for field:
// the same keys at every level, the same JSON types, floats with four decimals where the
// sample has a float, integers where it has an integer, and the documented formats.
func TestEmulatorContract(t *testing.T) {
	t.Parallel()
	sampleJSON, err := os.ReadFile("../testdata/documented_response.json")
	require.NoError(t, err)
	sample := decodeNumbers(t, sampleJSON)

	clock := newFakeClock()
	b := setup(t, kairostest.Config{Now: clock.Now})
	resp := b.do(t, apiRequest{})
	require.Equal(t, 200, resp.status)
	got := decodeNumbers(t, resp.body)
	compareShape(t, "$", sample, got)

	top := got.(map[string]any)
	require.Regexp(t, uuidRE, top["api_req_uid"])
	require.Equal(t, "2024-04-01 20:05:17", top["processed_at"])
	require.Equal(t, "2024-04-01 20:05:17", top["requested_at"])
	require.Equal(t, json.Number("2"), top["response_code"])
}

func decodeNumbers(t *testing.T, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	require.NoError(t, dec.Decode(&v))
	return v
}

func compareShape(t *testing.T, at string, want, got any) {
	t.Helper()
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		require.True(t, ok, "%s: want an object, got %T", at, got)
		require.Equal(t, sortedKeys(w), sortedKeys(g), "%s: keys", at)
		for k := range w {
			compareShape(t, at+"."+k, w[k], g[k])
		}
	case []any:
		g, ok := got.([]any)
		require.True(t, ok, "%s: want an array, got %T", at, got)
		require.NotEmpty(t, g, "%s: want elements", at)
		for i := range g {
			compareShape(t, fmt.Sprintf("%s[%d]", at, i), w[0], g[i])
		}
	case json.Number:
		g, ok := got.(json.Number)
		require.True(t, ok, "%s: want a number, got %T", at, got)
		if strings.Contains(string(w), ".") {
			require.Regexp(t, float4, string(g), "%s: a float with four decimals", at)
		} else {
			require.Regexp(t, integer, string(g), "%s: an integer", at)
		}
	case string:
		g, ok := got.(string)
		require.True(t, ok, "%s: want a string, got %T", at, got)
		if timeRE.MatchString(w) {
			require.Regexp(t, timeRE, g, "%s: YYYY-MM-DD HH:MM:SS", at)
		}
	default:
		t.Fatalf("%s: unexpected sample type %T", at, want)
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestEmulatorVerdicts(t *testing.T) {
	t.Parallel()
	score := 0.25
	b := setup(t, kairostest.Config{Rules: []kairostest.Rule{
		{Pattern: "*_noface.*", NoFace: true},
		{Pattern: "fixed_*", Score: &score},
		{Pattern: "fixed_never", NoFace: true}, // shadowed by the earlier rule
	}})

	t.Run("deterministic score from the image", func(t *testing.T) {
		t.Parallel()
		img := kairostest.JPEG(1200, 900, 42)
		v1 := decodeVerdict(t, b.do(t, apiRequest{selfie: img, name: "one.jpg"}).body)
		v2 := decodeVerdict(t, b.do(t, apiRequest{selfie: img, name: "two.jpg", threshold: "0.1"}).body)
		require.Equal(t, v1.ResponseData.FacesLiveness, v2.ResponseData.FacesLiveness)
		require.NotEqual(t, v1.APIReqUID, v2.APIReqUID)
		require.Equal(t, 1200, v1.ResponseData.Img.Width)
		require.Equal(t, 900, v1.ResponseData.Img.Height)

		// Different images spread over [0, 1].
		scores := map[float64]bool{}
		for seed := range int64(20) {
			v := decodeVerdict(t, b.do(t, apiRequest{selfie: kairostest.JPEG(640, 480, seed)}).body)
			s := v.ResponseData.FacesLiveness
			require.True(t, s >= 0 && s <= 1, "score %v", s)
			scores[s] = true
		}
		require.Greater(t, len(scores), 15)
	})

	t.Run("face box inside the image", func(t *testing.T) {
		t.Parallel()
		for _, size := range [][2]int{{300, 300}, {640, 480}, {300, 5000}, {5000, 300}} {
			for seed := range int64(5) {
				v := decodeVerdict(t, b.do(t, apiRequest{selfie: kairostest.PNG(size[0], size[1], seed)}).body)
				require.Len(t, v.ResponseData.FacesPredicted, 1)
				f := v.ResponseData.FacesPredicted[0]
				w, h := float64(size[0]), float64(size[1])
				require.True(t, f.Confidence > 0.5 && f.Confidence <= 1, "confidence %v", f.Confidence)
				require.True(t, f.Delta.X > 0 && f.Delta.Y > 0, "box %+v", f)
				require.True(t, f.TopLeft.X >= 0 && f.TopLeft.Y >= 0, "box %+v", f)
				require.LessOrEqual(t, f.TopLeft.X+f.Delta.X, w+0.0001, "box %+v in %v", f, size)
				require.LessOrEqual(t, f.TopLeft.Y+f.Delta.Y, h+0.0001, "box %+v in %v", f, size)
			}
		}
	})

	t.Run("rules", func(t *testing.T) {
		t.Parallel()
		v := decodeVerdict(t, b.do(t, apiRequest{name: "a_noface.jpg"}).body)
		require.Empty(t, v.ResponseData.FacesPredicted)
		require.Zero(t, v.ResponseData.FacesLiveness)
		v = decodeVerdict(t, b.do(t, apiRequest{name: "fixed_never"}).body)
		require.Equal(t, 0.25, v.ResponseData.FacesLiveness)
		require.Len(t, v.ResponseData.FacesPredicted, 1)
		// The name is the base name of the part's filename.
		v = decodeVerdict(t, b.do(t, apiRequest{name: "dir/sub/fixed_x.jpg"}).body)
		require.Equal(t, 0.25, v.ResponseData.FacesLiveness)
	})
}

func TestEmulatorRetryAfter(t *testing.T) {
	t.Parallel()
	b := setup(t, kairostest.Config{RetryAfter: 1500 * time.Millisecond})
	require.NoError(t, b.emu.SetFaults(kairostest.Faults{ErrorRate: 1}))
	resp := b.do(t, apiRequest{})
	require.Equal(t, 503, resp.status)
	require.Equal(t, "2", resp.header.Get("Retry-After"))

	require.NoError(t, b.emu.SetFaults(kairostest.Faults{UsageLimitFor: time.Hour}))
	resp = b.do(t, apiRequest{})
	require.Equal(t, 403, resp.status)
	require.Equal(t, "2", resp.header.Get("Retry-After"))

	require.NoError(t, b.emu.SetFaults(kairostest.Faults{}))
	resp = b.do(t, apiRequest{threshold: "7"})
	require.Equal(t, 400, resp.status)
	require.Empty(t, resp.header.Get("Retry-After"))
}

func TestEmulatorOutages(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	start := clock.Now()
	b := setup(t, kairostest.Config{Now: clock.Now, Outages: []kairostest.Outage{
		{From: start.Add(time.Minute), To: start.Add(2 * time.Minute)},
	}})
	for _, step := range []struct {
		at     time.Duration
		status int
	}{
		{0, 200},
		{time.Minute - 1, 200},
		{time.Minute, 503},
		{90 * time.Second, 503},
		{2 * time.Minute, 200},
	} {
		clock.Set(start.Add(step.at))
		require.Equal(t, step.status, b.do(t, apiRequest{}).status, "at %v", step.at)
	}
	clock.Set(start.Add(90 * time.Second))
	require.Equal(t, 401, b.do(t, apiRequest{key: "wrong"}).status, "credentials are checked first")
}

func TestEmulatorQuota(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	b := setup(t, kairostest.Config{Now: clock.Now, QuotaTotal: 3, QuotaPeriod: time.Hour})
	for i := range 3 {
		require.Equal(t, 200, b.do(t, apiRequest{}).status, "request %d", i)
	}
	require.Equal(t, 403, b.do(t, apiRequest{}).status)
	require.Equal(t, 403, b.do(t, apiRequest{}).status)
	clock.Add(time.Hour)
	require.Equal(t, 200, b.do(t, apiRequest{}).status, "a new period")
	st := b.emu.Stats()
	require.Equal(t, int64(2), st.LimitDenials)
	require.Equal(t, int64(4), st.Count(200))
}

// TestEmulatorRateLimitWindow drives the limiter with many concurrent requests against a
// stepped clock: at each 100 ms step, more requests than the limit arrive at once. In any
// 1-second window (10 consecutive steps) exactly the limit must be admitted.
func TestEmulatorRateLimitWindow(t *testing.T) {
	t.Parallel()
	const (
		limit   = 7
		perStep = 12
		steps   = 35
	)
	clock := newFakeClock()
	b := setup(t, kairostest.Config{Now: clock.Now, RateLimit: limit})
	admitted := make([]int, steps)
	for step := range steps {
		var wg sync.WaitGroup
		statuses := make(chan int, perStep)
		for range perStep {
			wg.Go(func() { statuses <- b.do(t, apiRequest{}).status })
		}
		wg.Wait()
		close(statuses)
		for s := range statuses {
			switch s {
			case 200:
				admitted[step]++
			case 403:
			default:
				t.Fatalf("unexpected status %d", s)
			}
		}
		clock.Add(100 * time.Millisecond)
	}
	for i := 0; i+10 <= steps; i++ {
		sum := 0
		for _, n := range admitted[i : i+10] {
			sum += n
		}
		require.Equal(t, limit, sum, "steps %d..%d: %v", i, i+9, admitted)
	}
	st := b.emu.Stats()
	require.Equal(t, 10*perStep, st.MaxPerSecond, "every arrival counts, denied ones too")
	require.Equal(t, int64(steps*perStep), st.Total)
	require.Equal(t, st.Count(403), st.LimitDenials)
}

func TestEmulatorRateLimitRealClock(t *testing.T) {
	t.Parallel()
	const limit = 20
	b := setup(t, kairostest.Config{RateLimit: limit})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 15 {
				b.do(t, apiRequest{})
			}
		})
	}
	wg.Wait()
	st := b.emu.Stats()
	require.Equal(t, int64(120), st.Total)
	require.GreaterOrEqual(t, st.Count(200), int64(limit), "the first second admits the limit")
	require.Equal(t, st.Count(403), st.LimitDenials)
}

func TestEmulatorErrorRate(t *testing.T) {
	t.Parallel()
	b := setup(t, kairostest.Config{ErrorRate: 0.5, Seed: 3})
	n503 := 0
	for range 200 {
		if b.do(t, apiRequest{}).status == 503 {
			n503++
		}
	}
	require.InDelta(t, 100, n503, 40)
}

func TestEmulatorMaxConcurrent(t *testing.T) {
	t.Parallel()
	b := setup(t, kairostest.Config{MaxConcurrent: 2, Latency: time.Hour, RetryAfter: time.Second})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, b.url, bytes.NewReader(multipartBody(t)))
			req.Header.Set("Content-Type", "multipart/form-data; boundary=B")
			req.Header.Set("app-id", testAppID)
			req.Header.Set("app-key", testAppKey)
			resp, err := b.client.Do(req)
			if err == nil {
				resp.Body.Close()
			}
		})
	}
	require.Eventually(t, func() bool { return b.emu.Stats().InFlight == 2 }, 10*time.Second, 5*time.Millisecond)
	resp := b.do(t, apiRequest{})
	require.Equal(t, http.StatusTooManyRequests, resp.status)
	require.Equal(t, "1", resp.header.Get("Retry-After"))
	cancel()
	wg.Wait()
	require.Eventually(t, func() bool { return b.emu.Stats().InFlight == 0 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, int64(3), b.emu.Stats().MaxConcurrent)
}

// multipartBody is a valid request body with boundary "B".
func multipartBody(t *testing.T) []byte {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	require.NoError(t, mw.SetBoundary("B"))
	require.NoError(t, mw.WriteField("threshold", "0.5"))
	w, err := mw.CreateFormFile("selfie", "s.jpg")
	require.NoError(t, err)
	_, _ = w.Write(defaultSelfie)
	require.NoError(t, mw.Close())
	return buf.Bytes()
}

// TestEmulatorDrainsBeforeErrors: a large body refused early is read to the end, so the
// client sees the answer, not a reset.
func TestEmulatorDrainsBeforeErrors(t *testing.T) {
	t.Parallel()
	b := setup(t, kairostest.Config{MaxBodyBytes: 1 << 20})
	big := kairostest.JPEGSized(900, 900, 1, 3<<20)
	for range 2 {
		require.Equal(t, 401, b.do(t, apiRequest{key: "wrong", selfie: big}).status)
		require.Equal(t, 413, b.do(t, apiRequest{selfie: big}).status)
	}
}

func TestEmulatorUpdate(t *testing.T) {
	t.Parallel()
	b := setup(t, kairostest.Config{})
	require.Equal(t, 200, b.do(t, apiRequest{}).status)
	require.NoError(t, b.emu.Update(func(c *kairostest.Config) { c.AppKey = "rotated" }))
	require.Equal(t, 401, b.do(t, apiRequest{}).status)
	require.Equal(t, 200, b.do(t, apiRequest{key: "rotated"}).status)
	require.Error(t, b.emu.Update(func(c *kairostest.Config) { c.ErrorRate = 2 }))
	require.Equal(t, "rotated", b.emu.Config().AppKey, "an invalid update changes nothing")
	require.Panics(t, func() { kairostest.New(kairostest.Config{AuthFailureStatus: 500}) })
}

func TestEmulatorAdminOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t, kairostest.Config{})
	admin := func(method, path, body string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, b.srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		resp, err := b.client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, out
	}
	stats := func() kairostest.Stats {
		t.Helper()
		status, body := admin(http.MethodGet, kairostest.StatsPath, "")
		require.Equal(t, 200, status)
		var s kairostest.Stats
		require.NoError(t, json.Unmarshal(body, &s))
		return s
	}

	require.Equal(t, 200, b.do(t, apiRequest{}).status)
	require.Equal(t, 400, b.do(t, apiRequest{threshold: "x"}).status)
	got := stats()
	if diff := cmp.Diff(b.emu.Stats(), got); diff != "" {
		t.Fatalf("stats over HTTP (-in-process +http):\n%s", diff)
	}
	require.Equal(t, int64(2), got.Total)
	require.Equal(t, map[int]int64{200: 1, 400: 1}, got.ByStatus)

	for _, tc := range []struct {
		desc   string
		faults string
		req    apiRequest
		status int
	}{
		{desc: "usage limit", faults: `{"usage_limit_for":"20s"}`, status: 403},
		{desc: "outage", faults: `{"outage_for":"10s"}`, status: 503},
		{desc: "error rate", faults: `{"error_rate":1,"for":"15s"}`, status: 503},
		{desc: "wrong key", faults: `{"app_key":"another"}`, status: 401},
		{desc: "new key accepted", faults: `{"app_key":"another"}`, req: apiRequest{key: "another"}, status: 200},
		{desc: "cleared", faults: `{}`, status: 200},
		{desc: "expired", faults: `{"usage_limit_for":"1ns","outage_for":"1ns","error_rate":1,"for":"1ns"}`, status: 200},
	} {
		status, body := admin(http.MethodPost, kairostest.FaultsPath, tc.faults)
		require.Equal(t, 204, status, "%s: %s", tc.desc, body)
		if tc.desc == "expired" {
			time.Sleep(time.Millisecond) // the 1 ns windows end (they are relative to the real clock)
		}
		require.Equal(t, tc.status, b.do(t, tc.req).status, tc.desc)
	}
	require.Equal(t, int64(1), stats().LimitDenials)

	status, _ := admin(http.MethodPost, kairostest.FaultsPath, `{"error_rate":3}`)
	require.Equal(t, 400, status)
	status, _ = admin(http.MethodPost, kairostest.FaultsPath, `{"for":"soon"}`)
	require.Equal(t, 400, status)
	status, _ = admin(http.MethodGet, kairostest.FaultsPath, "")
	require.Equal(t, 405, status)
	status, _ = admin(http.MethodGet, "/_emulator/nothing", "")
	require.Equal(t, 404, status)

	_, _ = admin(http.MethodPost, kairostest.FaultsPath, `{"usage_limit_for":"1h"}`)
	status, _ = admin(http.MethodPost, kairostest.ResetPath, "")
	require.Equal(t, 204, status)
	require.Equal(t, kairostest.Stats{ByStatus: map[int]int64{}}, stats())
	require.Equal(t, 200, b.do(t, apiRequest{}).status, "reset clears the faults")
}

func TestFaultsJSON(t *testing.T) {
	t.Parallel()
	key := "k"
	f := kairostest.Faults{UsageLimitFor: 20 * time.Second, OutageFor: time.Minute, ErrorRate: 0.5, For: 15 * time.Second, AppKey: &key}
	b, err := json.Marshal(f)
	require.NoError(t, err)
	require.JSONEq(t, `{"usage_limit_for":"20s","outage_for":"1m0s","error_rate":0.5,"for":"15s","app_key":"k"}`, string(b))
	var back kairostest.Faults
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, f, back)
}

func TestEmulatorResetStats(t *testing.T) {
	t.Parallel()
	b := setup(t, kairostest.Config{})
	b.do(t, apiRequest{})
	require.Equal(t, int64(1), b.emu.Stats().Total)
	b.emu.ResetStats()
	require.Equal(t, kairostest.Stats{ByStatus: map[int]int64{}}, b.emu.Stats())
}

// BenchmarkEmulator measures the emulator's throughput with 100 KB JPEGs over loopback,
// driven by the kairos client from parallel goroutines in the same process (the load
// generator shares the CPUs). It reports req/s.
func BenchmarkEmulator(b *testing.B) {
	emu := kairostest.New(kairostest.Config{AppID: testAppID, AppKey: testAppKey})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, WriteBufferSize: 64 << 10} // as kairos's default
	defer tr.CloseIdleConnections()
	client, err := kairos.New(kairos.Config{
		BaseURL: srv.URL + "/v0.2/liveness-verification", AppID: testAppID, AppKey: testAppKey,
		HTTPClient: &http.Client{Transport: tr},
	})
	require.NoError(b, err)
	const images = 16
	imgs := make([][]byte, images)
	for i := range imgs {
		imgs[i] = kairostest.JPEGSized(1000, 1000, int64(i), 100<<10)
	}
	b.SetBytes(int64(len(imgs[0])))
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	start, startCPU := time.Now(), processCPU()
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		r := bytes.NewReader(nil)
		for i := 0; pb.Next(); i++ {
			img := imgs[i%images]
			r.Reset(img)
			if _, err := client.Verify(context.Background(), kairos.Selfie{
				Name: "bench.jpg", ContentType: "image/jpeg", Size: int64(len(img)), Body: r,
			}, 0.6); err != nil {
				b.Error(err)
				return
			}
			n.Add(1)
		}
	})
	elapsed, cpu := time.Since(start), processCPU()-startCPU
	b.ReportMetric(float64(n.Load())/elapsed.Seconds(), "req/s")
	if cpu > 0 && n.Load() > 0 {
		// CPU per request, client and emulator together: what the machine can sustain
		// when nothing else competes for it is GOMAXPROCS / this.
		perReq := cpu / time.Duration(n.Load())
		b.ReportMetric(float64(perReq.Microseconds()), "cpu-µs/req")
		b.ReportMetric(float64(runtime.GOMAXPROCS(0))*float64(time.Second)/float64(perReq), "cpu-bound-req/s")
	}
	if st := emu.Stats(); st.Count(200) != st.Total {
		b.Fatalf("non-200 answers: %v", st.ByStatus)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	bad := 1.5
	now := time.Now()
	require.NoError(t, kairostest.Config{}.Validate())
	for _, tc := range []struct {
		desc string
		cfg  kairostest.Config
		want string
	}{
		{desc: "auth status", cfg: kairostest.Config{AuthFailureStatus: 400}, want: "AuthFailureStatus"},
		{desc: "negative latency", cfg: kairostest.Config{Latency: -1}, want: "durations"},
		{desc: "negative rate", cfg: kairostest.Config{RateLimit: -1}, want: "limits"},
		{desc: "error rate", cfg: kairostest.Config{ErrorRate: 1.1}, want: "ErrorRate"},
		{desc: "body cap", cfg: kairostest.Config{MaxBodyBytes: -1}, want: "MaxBodyBytes"},
		{desc: "outage backwards", cfg: kairostest.Config{Outages: []kairostest.Outage{{From: now, To: now}}}, want: "Outages[0]"},
		{desc: "pattern", cfg: kairostest.Config{Rules: []kairostest.Rule{{Pattern: "[a-"}}}, want: "Pattern"},
		{desc: "rule score", cfg: kairostest.Config{Rules: []kairostest.Rule{{Pattern: "*", Score: &bad}}}, want: "Score"},
		{desc: "rule status", cfg: kairostest.Config{Rules: []kairostest.Rule{{Pattern: "*", Status: 200}}}, want: "Status"},
	} {
		require.ErrorContains(t, tc.cfg.Validate(), tc.want, tc.desc)
	}
}
