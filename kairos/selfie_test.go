package kairos

import (
	"bytes"
	"errors"
	"io"
	"mime/multipart"
	"net/textproto"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

// TestMultipartBodyMatchesStdlib: the hand-written framing is byte for byte what
// mime/multipart.Writer produces for the same fields, and Len is exact.
func TestMultipartBodyMatchesStdlib(t *testing.T) {
	t.Parallel()
	const boundary = "0123456789abcdef0123456789abcdef"
	img := bytes.Repeat([]byte{0xff, 0xd8, 0xff, 0x00, '\r', '\n', '-'}, 5000)
	for _, tc := range []struct {
		desc      string
		selfie    Selfie
		threshold float64
		wantName  string
		wantType  string
		wantThr   string
	}{
		{desc: "plain", selfie: Selfie{Name: "selfie.jpg", ContentType: "image/jpeg"}, threshold: 0.6,
			wantName: "selfie.jpg", wantType: "image/jpeg", wantThr: "0.6"},
		{desc: "key with prefix", selfie: Selfie{Name: "users/42/front.png", ContentType: "image/png"}, threshold: 1,
			wantName: "front.png", wantType: "image/png", wantThr: "1"},
		{desc: "quotes and backslashes", selfie: Selfie{Name: `a"b\c.jpg`, ContentType: "image/jpeg"}, threshold: 0,
			wantName: `a"b\c.jpg`, wantType: "image/jpeg", wantThr: "0"},
		{desc: "no name, no type", selfie: Selfie{}, threshold: 0.123456789,
			wantName: "selfie", wantType: "application/octet-stream", wantThr: "0.123456789"},
		{desc: "trailing slash", selfie: Selfie{Name: "dir/"}, threshold: 0.5,
			wantName: "selfie", wantType: "application/octet-stream", wantThr: "0.5"},
		{desc: "unicode", selfie: Selfie{Name: "ünïcødé 自拍.jpg", ContentType: "image/jpeg"}, threshold: 0.5,
			wantName: "ünïcødé 自拍.jpg", wantType: "image/jpeg", wantThr: "0.5"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			s := tc.selfie
			s.Size, s.Body = int64(len(img)), bytes.NewReader(img)
			body := newMultipartBody(boundary, closingDelimiter(boundary), s, tc.threshold)
			got, err := io.ReadAll(body)
			require.NoError(t, err)
			require.Equal(t, body.Len(), int64(len(got)), "Len is exact")

			var want bytes.Buffer
			mw := multipart.NewWriter(&want)
			require.NoError(t, mw.SetBoundary(boundary))
			require.NoError(t, mw.WriteField("threshold", tc.wantThr))
			h := textproto.MIMEHeader{}
			h.Set("Content-Disposition", `form-data; name="selfie"; filename="`+quoteEscaper.Replace(tc.wantName)+`"`)
			h.Set("Content-Type", tc.wantType)
			pw, err := mw.CreatePart(h)
			require.NoError(t, err)
			_, _ = pw.Write(img)
			require.NoError(t, mw.Close())
			require.Equal(t, want.String(), string(got))

			// And the stdlib reads it back.
			mr := multipart.NewReader(bytes.NewReader(got), boundary)
			p, err := mr.NextPart()
			require.NoError(t, err)
			require.Equal(t, "threshold", p.FormName())
			p, err = mr.NextPart()
			require.NoError(t, err)
			require.Equal(t, tc.wantName, p.FileName())
			require.Equal(t, tc.wantType, p.Header.Get("Content-Type"))
			data, err := io.ReadAll(p)
			require.NoError(t, err)
			require.Equal(t, img, data)
		})
	}
}

func TestSelfieFileNameSanitized(t *testing.T) {
	t.Parallel()
	require.Equal(t, "a_b_c.jpg", Selfie{Name: "x/a\x00b\rc.jpg"}.fileName())
	require.Equal(t, "a_b_c.jpg", Selfie{Name: "a\nb\x7fc.jpg"}.fileName())
}

func TestMultipartBodySizeMismatch(t *testing.T) {
	t.Parallel()
	readErr := errors.New("storage stream reset")
	for _, tc := range []struct {
		desc string
		size int64
		body io.Reader
		want error
	}{
		{desc: "shorter than Size", size: 10, body: strings.NewReader("12345"), want: io.ErrUnexpectedEOF},
		{desc: "longer than Size", size: 3, body: strings.NewReader("12345"), want: ErrSelfieRead},
		{desc: "reader fails", size: 10, body: io.MultiReader(strings.NewReader("12"), iotest.ErrReader(readErr)), want: readErr},
		{desc: "fails after the last byte", size: 2, body: io.MultiReader(strings.NewReader("12"), iotest.ErrReader(readErr)), want: readErr},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			body := newMultipartBody("b", closingDelimiter("b"), Selfie{Size: tc.size, Body: tc.body}, 0.5)
			_, err := io.ReadAll(body)
			require.ErrorIs(t, err, ErrSelfieRead)
			require.ErrorIs(t, err, tc.want)
			require.Equal(t, err, body.readErr())
		})
	}
	// One byte at a time and exact: no error.
	body := newMultipartBody("b", closingDelimiter("b"), Selfie{Size: 5, Body: iotest.OneByteReader(strings.NewReader("12345"))}, 0.5)
	got, err := io.ReadAll(iotest.OneByteReader(body))
	require.NoError(t, err)
	require.Equal(t, body.Len(), int64(len(got)))
	require.NoError(t, body.readErr())
}

// panicReader fails the test if read.
type panicReader struct{ t *testing.T }

func (r panicReader) Read([]byte) (int, error) {
	r.t.Error("the selfie was read after detach")
	return 0, io.EOF
}

func TestMultipartBodyDetach(t *testing.T) {
	t.Parallel()
	body := newMultipartBody("b", closingDelimiter("b"), Selfie{Size: 10, Body: panicReader{t}}, 0.5)
	head := make([]byte, len(body.head))
	_, err := io.ReadFull(body, head)
	require.NoError(t, err)
	body.detach()
	n, err := body.Read(make([]byte, 10))
	require.Zero(t, n)
	require.ErrorIs(t, err, errDetached)
}
