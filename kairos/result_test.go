package kairos

import (
	"errors"
	"math"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
)

func TestParseDocumentedSample(t *testing.T) {
	t.Parallel()
	body, err := os.ReadFile("testdata/documented_response.json")
	require.NoError(t, err)
	got, err := parseResponse(body, 0.0)
	require.NoError(t, err)
	at := time.Date(2024, 4, 1, 20, 5, 17, 0, time.UTC)
	want := &Result{
		APIReqUID:    "c6bb825f-871c-4323-8c06-8e5fd3517747",
		ResponseCode: 2,
		RequestedAt:  at,
		ProcessedAt:  at,
		Score:        0,
		Threshold:    0,
		Live:         true, // 0.0 >= 0.0
		Faces:        []Face{{Confidence: 0.9885, X: 38.0577, Y: 4.0824, Width: 18.9982, Height: 25.3957}},
		ImageWidth:   95,
		ImageHeight:  71,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("(-want +got)\n%s", diff)
	}
	require.Equal(t, time.UTC, got.ProcessedAt.Location())
}

func TestParseResponse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc      string
		body      string
		threshold float64
		want      *Result // compared on Score, Live, len(Faces), ResponseCode, size
		bad       bool
	}{
		{desc: "live at the threshold", threshold: 0.6,
			body: `{"response_code":2,"response_data":{"faces_liveness":0.6,"faces_predicted":[{"confidence":0.9}],"img":{"height":900,"width":600}}}`,
			want: &Result{Score: 0.6, Live: true, Faces: make([]Face, 1), ResponseCode: 2, ImageWidth: 600, ImageHeight: 900}},
		{desc: "not live just below", threshold: 0.6,
			body: `{"response_data":{"faces_liveness":0.5999,"faces_predicted":[{}]}}`,
			want: &Result{Score: 0.5999, Faces: make([]Face, 1)}},
		{desc: "no face", threshold: 0,
			body: `{"response_data":{"faces_liveness":0.0,"faces_predicted":[],"img":{"height":900,"width":600}}}`,
			want: &Result{ImageWidth: 600, ImageHeight: 900}},
		{desc: "no face, no score, no list",
			body: `{"response_data":{}}`, want: &Result{}},
		{desc: "unknown fields and a string response_code", threshold: 0.5,
			body: `{"new":{"x":[1,2]},"response_code":"3","response_data":{"faces_liveness":0.7,"extra":true,"faces_predicted":[{"confidence":0.9,"landmarks":[]}]}}`,
			want: &Result{Score: 0.7, Live: true, Faces: make([]Face, 1), ResponseCode: 3}},
		{desc: "odd response_code ignored", body: `{"response_code":{"a":1},"response_data":{}}`, want: &Result{}},
		{desc: "not JSON", body: `<html>502 Bad Gateway</html>`, bad: true},
		{desc: "empty", body: ``, bad: true},
		{desc: "null", body: `null`, bad: true},
		{desc: "array", body: `[]`, bad: true},
		{desc: "no response_data", body: `{"api_req_uid":"x"}`, bad: true},
		{desc: "response_data null", body: `{"response_data":null}`, bad: true},
		{desc: "faces without a score", body: `{"response_data":{"faces_predicted":[{}]}}`, bad: true},
		{desc: "score above 1", body: `{"response_data":{"faces_liveness":1.5}}`, bad: true},
		{desc: "negative score", body: `{"response_data":{"faces_liveness":-0.1}}`, bad: true},
		{desc: "score is a string", body: `{"response_data":{"faces_liveness":"0.5"}}`, bad: true},
		{desc: "truncated", body: `{"response_data":{"faces_liveness":0.5`, bad: true},
		{desc: "trailing garbage", body: `{"response_data":{}} x`, bad: true},
		{desc: "negative width", body: `{"response_data":{"img":{"width":-1}}}`, bad: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			got, err := parseResponse([]byte(tc.body), tc.threshold)
			if tc.bad {
				require.ErrorIs(t, err, ErrBadResponse)
				require.Nil(t, got)
				var ae *APIError
				require.ErrorAs(t, err, &ae)
				require.NotEmpty(t, ae.Message)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want.Score, got.Score)
			require.Equal(t, tc.want.Live, got.Live)
			require.Len(t, got.Faces, len(tc.want.Faces))
			require.Equal(t, tc.want.ResponseCode, got.ResponseCode)
			require.Equal(t, [2]int{tc.want.ImageWidth, tc.want.ImageHeight}, [2]int{got.ImageWidth, got.ImageHeight})
			require.Equal(t, tc.threshold, got.Threshold)
		})
	}
}

func TestParseTime(t *testing.T) {
	t.Parallel()
	want := time.Date(2024, 4, 1, 20, 5, 17, 0, time.UTC)
	require.Equal(t, want, parseTime("2024-04-01 20:05:17"))
	require.True(t, want.Equal(parseTime("2024-04-01T22:05:17+02:00")))
	require.Equal(t, time.UTC, parseTime("2024-04-01T22:05:17+02:00").Location())
	require.True(t, parseTime("yesterday").IsZero())
	require.True(t, parseTime("").IsZero())
}

// FuzzParseResponse: the parser never panics, returns either a consistent Result or an
// ErrBadResponse, and never lets a score outside [0, 1] through. Seeds are in
// testdata/fuzz/FuzzParseResponse.
func FuzzParseResponse(f *testing.F) {
	if b, err := os.ReadFile("testdata/documented_response.json"); err == nil {
		f.Add(b, 0.6)
	}
	f.Add([]byte(`{"response_data":{"faces_liveness":0.7,"faces_predicted":[{"confidence":0.9}]}}`), 0.7)
	f.Add([]byte(`{"response_data":{}}`), 0.0)
	f.Fuzz(func(t *testing.T, body []byte, threshold float64) {
		if math.IsNaN(threshold) || threshold < 0 || threshold > 1 {
			threshold = 0.5 // Verify rejects these before parsing
		}
		res, err := parseResponse(body, threshold)
		if err != nil {
			if res != nil || !errors.Is(err, ErrBadResponse) {
				t.Fatalf("error %v with result %v", err, res)
			}
			return
		}
		if !(res.Score >= 0 && res.Score <= 1) {
			t.Fatalf("score %v outside [0, 1]", res.Score)
		}
		if res.Live != (len(res.Faces) > 0 && res.Score >= threshold) {
			t.Fatalf("live %v for score %v, threshold %v, %d faces", res.Live, res.Score, threshold, len(res.Faces))
		}
		if res.ImageWidth < 0 || res.ImageHeight < 0 {
			t.Fatalf("image size %dx%d", res.ImageWidth, res.ImageHeight)
		}
		if !res.RequestedAt.IsZero() && res.RequestedAt.Location() != time.UTC {
			t.Fatalf("requested_at not UTC: %v", res.RequestedAt)
		}
	})
}
