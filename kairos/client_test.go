package kairos_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/livenessq/livenessq/kairos"
	"github.com/livenessq/livenessq/kairos/kairostest"
)

// TestMain fails the run when a goroutine leaks or when any error a test kept (keep)
// contains the app key.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := checkKeptErrors(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			code = 1
		}
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

const testAppID = "livenessq-test"

// testBundle is a client talking to an emulator over real HTTP.
type testBundle struct {
	emu    *kairostest.Emulator
	srv    *httptest.Server
	client *kairos.Client
}

// transport returns a fresh transport closed when the test ends, so that goleak sees no
// idle connections.
func transport(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func setup(t *testing.T, ecfg kairostest.Config, mods ...func(*kairos.Config)) *testBundle {
	t.Helper()
	ecfg.AppID, ecfg.AppKey = testAppID, secretKey
	emu := kairostest.New(ecfg)
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	return &testBundle{emu: emu, srv: srv, client: newClient(t, srv.URL+"/v0.2/liveness-verification", mods...)}
}

func newClient(t *testing.T, url string, mods ...func(*kairos.Config)) *kairos.Client {
	t.Helper()
	cfg := kairos.Config{BaseURL: url, AppID: testAppID, AppKey: secretKey, HTTPClient: transport(t)}
	for _, mod := range mods {
		mod(&cfg)
	}
	c, err := kairos.New(cfg)
	require.NoError(t, err)
	return c
}

// rawServer serves h over real HTTP and returns a client for it.
func rawServer(t *testing.T, h http.HandlerFunc, mods ...func(*kairos.Config)) *kairos.Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return newClient(t, srv.URL, mods...)
}

func jpegSelfie(name string, img []byte) kairos.Selfie {
	return kairos.Selfie{Name: name, ContentType: "image/jpeg", Size: int64(len(img)), Body: bytes.NewReader(img)}
}

var (
	selfieJPEG = kairostest.JPEG(1200, 900, 1)
	uuidRE     = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

// errs collects every error the tests see, to check none reveals the key.
var errs struct {
	sync.Mutex
	list []error
}

func keep(err error) error {
	if err != nil {
		errs.Lock()
		errs.list = append(errs.list, err)
		errs.Unlock()
	}
	return err
}

func TestVerifyVerdicts(t *testing.T) {
	t.Parallel()
	hi, lo, edge := 0.9, 0.1, 0.6
	clock := time.Date(2024, 4, 1, 20, 5, 17, 0, time.UTC)
	b := setup(t, kairostest.Config{
		Now: func() time.Time { return clock },
		Rules: []kairostest.Rule{
			{Pattern: "live_*", Score: &hi},
			{Pattern: "spoof_*", Score: &lo},
			{Pattern: "edge_*", Score: &edge},
			{Pattern: "noface_*", NoFace: true},
		},
	})
	ctx := t.Context()
	for _, tc := range []struct {
		desc      string
		name      string
		threshold float64
		live      bool
		score     float64
		faces     int
	}{
		{desc: "live", name: "users/1/live_a.jpg", threshold: 0.6, live: true, score: 0.9, faces: 1},
		{desc: "not live", name: "spoof_a.jpg", threshold: 0.6, live: false, score: 0.1, faces: 1},
		{desc: "score equal to threshold is live", name: "edge_a.jpg", threshold: 0.6, live: true, score: 0.6, faces: 1},
		{desc: "threshold 1 not reached", name: "live_b.jpg", threshold: 1, live: false, score: 0.9, faces: 1},
		{desc: "threshold 0 always live with a face", name: "spoof_b.jpg", threshold: 0, live: true, score: 0.1, faces: 1},
		{desc: "no face is a result", name: "noface_a.jpg", threshold: 0, live: false, score: 0, faces: 0},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			res, err := b.client.Verify(ctx, jpegSelfie(tc.name, selfieJPEG), tc.threshold)
			require.NoError(t, keep(err))
			require.Equal(t, tc.live, res.Live)
			require.Equal(t, tc.score, res.Score)
			require.Len(t, res.Faces, tc.faces)
			require.Equal(t, tc.threshold, res.Threshold)
			require.Equal(t, 200, res.StatusCode)
			require.Equal(t, 2, res.ResponseCode)
			require.Regexp(t, uuidRE, res.APIReqUID)
			require.Regexp(t, uuidRE, res.RequestID)
			require.NotEqual(t, res.APIReqUID, res.RequestID)
			require.Equal(t, clock, res.RequestedAt)
			require.Equal(t, clock, res.ProcessedAt)
			require.Equal(t, [2]int{1200, 900}, [2]int{res.ImageWidth, res.ImageHeight})
			require.Positive(t, res.Latency)
			for _, f := range res.Faces {
				require.True(t, f.Width > 0 && f.Height > 0 && f.X+f.Width <= 1200 && f.Y+f.Height <= 900, "%+v", f)
			}
		})
	}
}

func TestVerifyScoreIsDeterministic(t *testing.T) {
	t.Parallel()
	b := setup(t, kairostest.Config{})
	first, err := b.client.Verify(t.Context(), jpegSelfie("a.jpg", selfieJPEG), 0.5)
	require.NoError(t, err)
	again, err := b.client.Verify(t.Context(), jpegSelfie("b.jpg", selfieJPEG), 0.5)
	require.NoError(t, err)
	require.Equal(t, first.Score, again.Score)
	require.Equal(t, first.Faces, again.Faces)
	require.Equal(t, first.Score >= 0.5, first.Live)

	png := kairostest.PNG(800, 800, 3)
	res, err := b.client.Verify(t.Context(), kairos.Selfie{Name: "p.png", ContentType: "image/png", Size: int64(len(png)), Body: bytes.NewReader(png)}, 0.5)
	require.NoError(t, err)
	require.Equal(t, 800, res.ImageWidth)
}

func TestVerifyHeaderStyles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc     string
		style    kairos.HeaderStyle
		sent     [2]string // canonical header names the server sees
		notSent  [2]string
		emulator int // status with the right key
	}{
		{desc: "hyphen", style: kairos.HeaderHyphen, sent: [2]string{"App-Id", "App-Key"}, notSent: [2]string{"App_id", "App_key"}},
		{desc: "underscore", style: kairos.HeaderUnderscore, sent: [2]string{"App_id", "App_key"}, notSent: [2]string{"App-Id", "App-Key"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			style := func(c *kairos.Config) { c.HeaderStyle = tc.style }
			// The emulator accepts the spelling.
			b := setup(t, kairostest.Config{}, style)
			_, err := b.client.Verify(t.Context(), jpegSelfie("a.jpg", selfieJPEG), 0.5)
			require.NoError(t, keep(err))
			// And only that spelling is on the wire.
			var got http.Header
			c := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
				got = r.Header.Clone()
				_, _ = io.Copy(io.Discard, r.Body)
				w.WriteHeader(http.StatusUnauthorized)
			}, style)
			_, err = c.Verify(t.Context(), jpegSelfie("a.jpg", selfieJPEG), 0.5)
			require.ErrorIs(t, keep(err), kairos.ErrUnauthorized)
			require.Equal(t, testAppID, got.Get(tc.sent[0]))
			require.Equal(t, secretKey, got.Get(tc.sent[1]))
			require.Empty(t, got.Values(tc.notSent[0]))
			require.Empty(t, got.Values(tc.notSent[1]))
			require.Equal(t, kairos.DefaultUserAgent, got.Get("User-Agent"))
		})
	}
}

func TestVerifyWireFormat(t *testing.T) {
	t.Parallel()
	type seen struct {
		contentLength int64
		received      int64
		threshold     string
		fileName      string
		partType      string
		data          []byte
		err           error
	}
	ch := make(chan seen, 1)
	c := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		var s seen
		s.contentLength = r.ContentLength
		body, err := io.ReadAll(r.Body)
		s.received, s.err = int64(len(body)), err
		if err == nil {
			_, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
			mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
			for {
				p, err := mr.NextPart()
				if err != nil {
					if err != io.EOF {
						s.err = err
					}
					break
				}
				v, _ := io.ReadAll(p)
				switch p.FormName() {
				case "threshold":
					s.threshold = string(v)
				case "selfie":
					s.fileName, s.partType, s.data = p.FileName(), p.Header.Get("Content-Type"), v
				}
			}
		}
		ch <- s
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"response_data":{"faces_liveness":0.5,"faces_predicted":[{}]}}`)
	})
	_, err := c.Verify(t.Context(), jpegSelfie("bucket/prefix/user 7.jpg", selfieJPEG), 0.123456)
	require.NoError(t, err)
	s := <-ch
	require.NoError(t, s.err)
	require.Equal(t, s.contentLength, s.received, "Content-Length is exact")
	require.Equal(t, "0.123456", s.threshold)
	require.Equal(t, "user 7.jpg", s.fileName)
	require.Equal(t, "image/jpeg", s.partType)
	require.Equal(t, selfieJPEG, s.data)
}

// TestVerifyErrors runs the client against the emulator for every error class.
func TestVerifyErrors(t *testing.T) {
	t.Parallel()
	outageStart := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		desc       string
		emu        kairostest.Config
		faults     kairostest.Faults
		mod        func(*kairos.Config)
		img        []byte
		name       string
		want       error
		status     int
		retryable  bool
		retryAfter time.Duration
		message    string
	}{
		{desc: "400 image too small", img: kairostest.JPEG(299, 600, 1), want: kairos.ErrRejected, status: 400, message: "299x600"},
		{desc: "400 image too large", img: kairostest.JPEG(5001, 400, 1), want: kairos.ErrRejected, status: 400, message: "5001x400"},
		{desc: "401 wrong key, hyphen", mod: func(c *kairos.Config) { c.AppKey = "wrong-" + secretKey }, want: kairos.ErrUnauthorized, status: 401},
		{desc: "401 wrong key, underscore", mod: func(c *kairos.Config) {
			c.AppKey, c.HeaderStyle = "wrong-"+secretKey, kairos.HeaderUnderscore
		}, want: kairos.ErrUnauthorized, status: 401},
		{desc: "401 wrong id", mod: func(c *kairos.Config) { c.AppID = "other" }, want: kairos.ErrUnauthorized, status: 401},
		{desc: "403 auth failure configured as 403", emu: kairostest.Config{AuthFailureStatus: 403}, mod: func(c *kairos.Config) { c.AppKey = "x" },
			want: kairos.ErrUsageLimit, status: 403},
		{desc: "403 usage limit", faults: kairostest.Faults{UsageLimitFor: time.Hour}, want: kairos.ErrUsageLimit, status: 403},
		{desc: "403 usage limit with Retry-After", emu: kairostest.Config{RetryAfter: 30 * time.Second}, faults: kairostest.Faults{UsageLimitFor: time.Hour},
			want: kairos.ErrUsageLimit, status: 403, retryAfter: 30 * time.Second},
		{desc: "403 quota", emu: kairostest.Config{QuotaTotal: 1}, want: kairos.ErrUsageLimit, status: 403}, // the setup call uses the one
		{desc: "404 is an auth-class 4xx", emu: kairostest.Config{Rules: []kairostest.Rule{{Pattern: "*", Status: 404}}}, want: kairos.ErrUnauthorized, status: 404},
		{desc: "405", emu: kairostest.Config{Rules: []kairostest.Rule{{Pattern: "*", Status: 405}}}, want: kairos.ErrUnauthorized, status: 405},
		{desc: "413", emu: kairostest.Config{MaxBodyBytes: 64 << 10}, img: kairostest.JPEGSized(900, 900, 1, 200<<10), want: kairos.ErrRejected, status: 413, message: "larger than"},
		{desc: "415", img: []byte("GIF89a not an image at all"), want: kairos.ErrRejected, status: 415, message: "JPEG or PNG"},
		{desc: "422", emu: kairostest.Config{Rules: []kairostest.Rule{{Pattern: "*.jpg", Status: 422}}}, want: kairos.ErrRejected, status: 422},
		{desc: "429 with Retry-After", emu: kairostest.Config{RetryAfter: 3 * time.Second, Rules: []kairostest.Rule{{Pattern: "*", Status: 429}}},
			want: kairos.ErrRateLimited, status: 429, retryable: true, retryAfter: 3 * time.Second},
		{desc: "500", emu: kairostest.Config{Rules: []kairostest.Rule{{Pattern: "*", Status: 500}}}, want: kairos.ErrServer, status: 500, retryable: true},
		{desc: "503 with Retry-After", emu: kairostest.Config{ErrorRate: 1, RetryAfter: 5 * time.Second},
			want: kairos.ErrServer, status: 503, retryable: true, retryAfter: 5 * time.Second},
		{desc: "503 outage window", emu: kairostest.Config{
			Now:     func() time.Time { return outageStart.Add(time.Minute) },
			Outages: []kairostest.Outage{{From: outageStart, To: outageStart.Add(time.Hour)}},
		}, want: kairos.ErrServer, status: 503, retryable: true},
		{desc: "503 outage fault", faults: kairostest.Faults{OutageFor: time.Hour}, want: kairos.ErrServer, status: 503, retryable: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			mods := []func(*kairos.Config){}
			if tc.mod != nil {
				mods = append(mods, tc.mod)
			}
			b := setup(t, tc.emu, mods...)
			if tc.emu.QuotaTotal > 0 { // use the quota up
				ok := newClient(t, b.srv.URL)
				_, err := ok.Verify(t.Context(), jpegSelfie("a.jpg", selfieJPEG), 0.5)
				require.NoError(t, err)
			}
			require.NoError(t, b.emu.SetFaults(tc.faults))
			img := tc.img
			if img == nil {
				img = selfieJPEG
			}
			res, err := b.client.Verify(t.Context(), jpegSelfie("dir/a.jpg", img), 0.5)
			keep(err)
			require.Nil(t, res)
			require.ErrorIs(t, err, tc.want)
			var ae *kairos.APIError
			require.ErrorAs(t, err, &ae)
			require.Equal(t, tc.status, ae.StatusCode)
			require.Regexp(t, uuidRE, ae.RequestID)
			require.Contains(t, ae.Message, tc.message)
			require.Equal(t, tc.retryable, kairos.IsRetryable(err))
			require.Equal(t, tc.retryAfter, kairos.RetryAfter(err))
			require.Contains(t, err.Error(), fmt.Sprintf("status %d", tc.status))
			require.Equal(t, int64(1), b.emu.Stats().Count(tc.status))
		})
	}
}

// TestVerifyBadResponse: answers that are not the documented 200 are ErrBadResponse,
// retryable, with the request id.
func TestVerifyBadResponse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc   string
		status int
		body   string
	}{
		{desc: "html", status: 200, body: "<html><body>maintenance</body></html>"},
		{desc: "empty", status: 200, body: ""},
		{desc: "empty object", status: 200, body: "{}"},
		{desc: "truncated", status: 200, body: `{"response_data":{"faces_liveness":0.5,"faces_`},
		{desc: "score out of range", status: 200, body: `{"response_data":{"faces_liveness":7,"faces_predicted":[{}]}}`},
		{desc: "faces without score", status: 200, body: `{"response_data":{"faces_predicted":[{}]}}`},
		{desc: "too large", status: 200, body: `{"x":"` + strings.Repeat("a", 1<<20) + `"}`},
		{desc: "201", status: 201, body: `{"response_data":{}}`},
		{desc: "204", status: 204},
		{desc: "redirect is not followed", status: 302},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			c := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("X-Request-ID", "rid-1")
				if tc.status == 302 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			})
			res, err := c.Verify(t.Context(), jpegSelfie("a.jpg", selfieJPEG), 0.5)
			keep(err)
			require.Nil(t, res)
			require.ErrorIs(t, err, kairos.ErrBadResponse)
			require.True(t, kairos.IsRetryable(err))
			var ae *kairos.APIError
			require.ErrorAs(t, err, &ae)
			require.Equal(t, "rid-1", ae.RequestID)
			require.Equal(t, tc.status, ae.StatusCode)
			require.NotContains(t, err.Error(), "maintenance", "the body is not quoted")
		})
	}
}

// TestVerifyTransportErrors: no answer at all is ErrTransport, retryable.
func TestVerifyTransportErrors(t *testing.T) {
	t.Parallel()
	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		require.NoError(t, l.Close())
		c := newClient(t, "http://"+addr+"/v0.2/liveness-verification")
		_, err = c.Verify(t.Context(), jpegSelfie("a.jpg", selfieJPEG), 0.5)
		require.ErrorIs(t, keep(err), kairos.ErrTransport)
		require.True(t, kairos.IsRetryable(err))
		require.Zero(t, kairos.RetryAfter(err))
	})
	t.Run("connection dropped", func(t *testing.T) {
		t.Parallel()
		c := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = conn.Close()
			}
		})
		_, err := c.Verify(t.Context(), jpegSelfie("a.jpg", selfieJPEG), 0.5)
		require.ErrorIs(t, keep(err), kairos.ErrTransport)
		require.True(t, kairos.IsRetryable(err))
	})
	t.Run("body cut short", func(t *testing.T) {
		t.Parallel()
		c := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Length", "500")
			w.WriteHeader(200)
			_, _ = io.WriteString(w, `{"response_data":`)
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = conn.Close()
			}
		})
		_, err := c.Verify(t.Context(), jpegSelfie("a.jpg", selfieJPEG), 0.5)
		require.ErrorIs(t, keep(err), kairos.ErrTransport)
	})
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		b := setup(t, kairostest.Config{Latency: time.Hour}, func(c *kairos.Config) { c.Timeout = 50 * time.Millisecond })
		_, err := b.client.Verify(t.Context(), jpegSelfie("a.jpg", selfieJPEG), 0.5)
		require.ErrorIs(t, keep(err), kairos.ErrTransport)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.True(t, kairos.IsRetryable(err))
	})
	t.Run("context canceled", func(t *testing.T) {
		t.Parallel()
		b := setup(t, kairostest.Config{Latency: time.Hour})
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			defer cancel()
			for b.emu.Stats().InFlight == 0 && ctx.Err() == nil {
				time.Sleep(time.Millisecond)
			}
		}()
		_, err := b.client.Verify(ctx, jpegSelfie("a.jpg", selfieJPEG), 0.5)
		require.ErrorIs(t, keep(err), kairos.ErrTransport)
		require.ErrorIs(t, err, context.Canceled)
	})
}

func TestVerifyInvalidInputs(t *testing.T) {
	t.Parallel()
	b := setup(t, kairostest.Config{})
	for _, th := range []float64{-0.0001, 1.0001, 2, -1, nan(), inf(1), inf(-1)} {
		_, err := b.client.Verify(t.Context(), jpegSelfie("a.jpg", selfieJPEG), th)
		require.ErrorIs(t, keep(err), kairos.ErrInvalidThreshold, "threshold %v", th)
		require.False(t, kairos.IsRetryable(err))
	}
	for _, s := range []kairos.Selfie{
		{Name: "a.jpg", Size: 3},
		{Name: "a.jpg", Size: -1, Body: strings.NewReader("abc")},
		{Name: "a.jpg", Size: 3, Body: strings.NewReader("abc"), ContentType: "image/jpeg\r\nX-Evil: 1"},
	} {
		_, err := b.client.Verify(t.Context(), s, 0.5)
		require.ErrorIs(t, keep(err), kairos.ErrInvalidSelfie)
		require.False(t, kairos.IsRetryable(err))
	}
	require.Zero(t, b.emu.Stats().Total, "no request was sent")
}

type failingReader struct{ after int }

var errStorage = errors.New("storage: connection reset by peer")

func (r *failingReader) Read(p []byte) (int, error) {
	if r.after <= 0 {
		return 0, errStorage
	}
	n := min(len(p), r.after)
	clear(p[:n])
	r.after -= n
	return n, nil
}

func TestVerifySelfieReadErrors(t *testing.T) {
	t.Parallel()
	b := setup(t, kairostest.Config{})
	for _, tc := range []struct {
		desc string
		s    kairos.Selfie
		also error
	}{
		{desc: "shorter than Size", s: kairos.Selfie{Name: "a.jpg", Size: int64(len(selfieJPEG)) + 10, Body: bytes.NewReader(selfieJPEG)}, also: io.ErrUnexpectedEOF},
		{desc: "longer than Size", s: kairos.Selfie{Name: "a.jpg", Size: int64(len(selfieJPEG)) - 10, Body: bytes.NewReader(selfieJPEG)}},
		{desc: "reader fails midway", s: kairos.Selfie{Name: "a.jpg", Size: 1 << 20, Body: &failingReader{after: 100 << 10}}, also: errStorage},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := b.client.Verify(t.Context(), tc.s, 0.5)
			require.ErrorIs(t, keep(err), kairos.ErrSelfieRead)
			if tc.also != nil {
				require.ErrorIs(t, err, tc.also)
			}
			require.NotErrorIs(t, err, kairos.ErrTransport)
			require.True(t, kairos.IsRetryable(err))
			require.Contains(t, err.Error(), `"a.jpg"`)
		})
	}
}

// patternReader yields n bytes of a repeating pattern without allocating.
type patternReader struct {
	left int64
	read int64
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), r.left))
	for i := range p[:n] {
		p[i] = byte(i)
	}
	r.left -= int64(n)
	r.read += int64(n)
	return n, nil
}

// TestVerifyStreamsLargeImage: a 20 MiB selfie goes out whole, and the bytes allocated
// during the call (client and emulator together, in this process) stay far below its
// size: nothing buffers the image. The emulator streams it too, and rejects it (415) since
// it is not an image. Not parallel: it measures the process's allocations.
func TestVerifyStreamsLargeImage(t *testing.T) {
	const size = 20 << 20
	b := setup(t, kairostest.Config{MaxBodyBytes: 64 << 20})
	// Warm up connections and pools.
	_, err := b.client.Verify(t.Context(), jpegSelfie("warm.jpg", selfieJPEG), 0.5)
	require.NoError(t, err)

	body := &patternReader{left: size}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err = b.client.Verify(t.Context(), kairos.Selfie{Name: "big.jpg", ContentType: "image/jpeg", Size: size, Body: body}, 0.5)
	runtime.ReadMemStats(&after)

	require.ErrorIs(t, err, kairos.ErrRejected)
	var ae *kairos.APIError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, http.StatusUnsupportedMediaType, ae.StatusCode)
	require.Equal(t, int64(size), body.read, "the whole image was sent")
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("allocated %d KiB while streaming %d MiB", allocated>>10, size>>20)
	require.Less(t, allocated, uint64(2<<20), "allocations must not grow with the image")
}

// checkKeptErrors looks for the app key in every error the tests kept, in every form a
// logger may print it.
func checkKeptErrors() error {
	errs.Lock()
	defer errs.Unlock()
	var logs bytes.Buffer
	log := zerolog.New(&logs)
	for i, err := range errs.list {
		var ae *kairos.APIError
		forms := []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)}
		if errors.As(err, &ae) {
			forms = append(forms, fmt.Sprintf("%+v", *ae))
		}
		for _, s := range forms {
			if strings.Contains(s, secretKey) {
				return fmt.Errorf("kept error %d (%T) contains the app key", i, err)
			}
		}
		log.Error().Err(err).Interface("detail", err).Msg("verify failed")
	}
	if strings.Contains(logs.String(), secretKey) {
		return errors.New("log output contains the app key")
	}
	return nil
}

// TestSecretsNeverLeak: even a server that echoes the key in its error message does not
// get it into an error. (Every other error the tests see is checked by TestMain.)
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc   string
		status int
		body   string // %s is replaced by the key the server received
		want   error
	}{
		{desc: "json message", status: 401, body: `{"Errors":[{"Message":"key %s is not valid","ErrCode":1}]}`, want: kairos.ErrUnauthorized},
		{desc: "plain text", status: 403, body: "denied for %s", want: kairos.ErrUsageLimit},
		{desc: "server error", status: 500, body: `{"message":"panic: header app-key=%s"}`, want: kairos.ErrServer},
		{desc: "bad 200", status: 200, body: `{"response_data":{"faces_liveness":"%s"}}`, want: kairos.ErrBadResponse},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			c := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.WriteHeader(tc.status)
				_, _ = fmt.Fprintf(w, tc.body, r.Header.Get("app-key"))
			})
			_, err := c.Verify(t.Context(), jpegSelfie("a.jpg", selfieJPEG), 0.5)
			require.ErrorIs(t, keep(err), tc.want)
			var logs bytes.Buffer
			log := zerolog.New(&logs)
			log.Error().Err(err).Msg("verify failed")
			for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), logs.String()} {
				require.NotContains(t, s, secretKey)
			}
			if tc.status != 200 {
				require.Contains(t, err.Error(), "[redacted]", "the message is kept, the key removed")
			}
		})
	}
}

func nan() float64 { var z float64; return z / z }

func inf(sign int) float64 {
	var z float64
	return float64(sign) / z
}

// BenchmarkVerify sends a 100 KB JPEG to the emulator over loopback, one call at a time.
// allocs/op counts the client and the emulator (same process).
func BenchmarkVerify(b *testing.B) {
	emu := kairostest.New(kairostest.Config{AppID: testAppID, AppKey: secretKey})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	defer tr.CloseIdleConnections()
	c, err := kairos.New(kairos.Config{BaseURL: srv.URL, AppID: testAppID, AppKey: secretKey, HTTPClient: &http.Client{Transport: tr}})
	require.NoError(b, err)
	img := kairostest.JPEGSized(1000, 1000, 1, 100<<10)
	r := bytes.NewReader(img)
	b.SetBytes(int64(len(img)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(img)
		if _, err := c.Verify(context.Background(), kairos.Selfie{Name: "a.jpg", ContentType: "image/jpeg", Size: int64(len(img)), Body: r}, 0.6); err != nil {
			b.Fatal(err)
		}
	}
}

// cannedTransport answers every request with the same 200 after reading the body,
// allocating nothing itself, so that BenchmarkVerifyClientOnly measures the client (and
// http.Client.Do) alone.
type cannedTransport struct {
	resp *http.Response
	body *cannedBody
}

type cannedBody struct {
	data []byte
	r    bytes.Reader
}

func (b *cannedBody) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *cannedBody) Close() error               { b.r.Reset(b.data); return nil }

func newCannedTransport(body string) *cannedTransport {
	cb := &cannedBody{data: []byte(body)}
	cb.r.Reset(cb.data)
	return &cannedTransport{body: cb, resp: &http.Response{
		StatusCode: 200, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"rid"}},
		Body:          cb,
		ContentLength: int64(len(body)),
	}}
}

func (t *cannedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	_, _ = io.Copy(io.Discard, req.Body)
	_ = req.Body.Close()
	t.resp.Request = req
	return t.resp, nil
}

// BenchmarkVerifyClientOnly: the allocations of one Verify without a network or server:
// framing, request, answer parsing, result.
func BenchmarkVerifyClientOnly(b *testing.B) {
	tr := newCannedTransport(`{"api_req_uid":"c6bb825f-871c-4323-8c06-8e5fd3517747","processed_at":"2024-04-01 20:05:17",` +
		`"requested_at":"2024-04-01 20:05:17","response_code":2,"response_data":{"faces_liveness":0.7311,"faces_predicted":` +
		`[{"confidence":0.9885,"delta":{"x":318.9982,"y":425.3957},"top_left":{"x":338.0577,"y":204.0824}}],"img":{"height":1000,"width":1000}}}`)
	c, err := kairos.New(kairos.Config{BaseURL: "http://kairos.test/v0.2/liveness-verification", AppID: testAppID, AppKey: secretKey,
		HTTPClient: &http.Client{Transport: tr}})
	require.NoError(b, err)
	img := kairostest.JPEGSized(1000, 1000, 1, 100<<10)
	r := bytes.NewReader(img)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(img)
		res, err := c.Verify(context.Background(), kairos.Selfie{Name: "users/1/a.jpg", ContentType: "image/jpeg", Size: int64(len(img)), Body: r}, 0.6)
		if err != nil || !res.Live {
			b.Fatal(res, err)
		}
	}
}

// TestDefaultTransportKeepsMaxConns: with the default HTTP client, MaxConns calls at once,
// twice, open MaxConns connections: none is closed after its call and dialled again.
func TestDefaultTransportKeepsMaxConns(t *testing.T) {
	t.Parallel()
	const conns = 100 // above the default of 64
	emu := kairostest.New(kairostest.Config{AppID: testAppID, AppKey: secretKey, Latency: 100 * time.Millisecond})
	srv := httptest.NewUnstartedServer(emu)
	var mu sync.Mutex
	opened := 0
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			opened++
			mu.Unlock()
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c, err := kairos.New(kairos.Config{BaseURL: srv.URL + "/v0.2/liveness-verification", AppID: testAppID, AppKey: secretKey, MaxConns: conns})
	require.NoError(t, err)
	img := kairostest.JPEG(400, 400, 1)
	for round := range 2 {
		var wg sync.WaitGroup
		errc := make(chan error, conns)
		for range conns {
			wg.Go(func() {
				_, err := c.Verify(context.Background(), jpegSelfie("a.jpg", img), 0.5)
				errc <- keep(err)
			})
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			require.NoError(t, err)
		}
		mu.Lock()
		n := opened
		mu.Unlock()
		require.LessOrEqual(t, n, conns, "round %d: connections were closed after their call and dialled again", round+1)
	}
}
