package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

func TestGuardedReaderCap(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc    string
		size    int
		max     int64
		tooBig  bool
		oneByte bool // read one byte at a time
	}{
		{desc: "no cap", size: 100, max: 0},
		{desc: "under the cap", size: 99, max: 100},
		{desc: "at the cap", size: 100, max: 100},
		{desc: "one over the cap", size: 101, max: 100, tooBig: true},
		{desc: "far over the cap", size: 10_000, max: 100, tooBig: true},
		{desc: "at the cap, byte by byte", size: 100, max: 100, oneByte: true},
		{desc: "over the cap, byte by byte", size: 101, max: 100, tooBig: true, oneByte: true},
		{desc: "empty", size: 0, max: 1},
	} {
		data := bytes.Repeat([]byte("x"), tc.size)
		var r io.Reader = newGuardedReader(context.Background(), io.NopCloser(bytes.NewReader(data)), "k", tc.max)
		if tc.oneByte {
			r = iotest.OneByteReader(r)
		}
		got, err := io.ReadAll(r)
		if tc.tooBig {
			require.ErrorIs(t, err, ErrTooLarge, tc.desc)
			require.Len(t, got, int(tc.max), "%s: exactly the cap is returned", tc.desc)
			_, err = r.Read(make([]byte, 10))
			require.ErrorIs(t, err, ErrTooLarge, "%s: the error sticks", tc.desc)
			continue
		}
		require.NoError(t, err, tc.desc)
		require.Equal(t, data, got, tc.desc)
	}
}

func TestGuardedReaderContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	g := newGuardedReader(ctx, io.NopCloser(strings.NewReader("abcdef")), "k", 0)
	buf := make([]byte, 3)
	n, err := g.Read(buf)
	require.NoError(t, err)
	require.Equal(t, 3, n)
	cancel()
	_, err = g.Read(buf)
	require.ErrorIs(t, err, context.Canceled)
	require.Contains(t, err.Error(), `"k"`)

	// An error from below while the context ends is reported as the context's.
	ctx, cancel = context.WithCancel(context.Background())
	failing := &cancelOnRead{cancel: cancel}
	_, err = newGuardedReader(ctx, io.NopCloser(failing), "k", 0).Read(buf)
	require.ErrorIs(t, err, context.Canceled)
}

// cancelOnRead cancels a context, then fails, as a connection closed by a cancelled
// request does.
type cancelOnRead struct{ cancel context.CancelFunc }

func (c *cancelOnRead) Read([]byte) (int, error) {
	c.cancel()
	return 0, errors.New("use of closed network connection")
}
