package storage

import (
	"context"
	"fmt"
	"io"
)

// guardedReader wraps the content reader a driver returns: it stops reading once ctx ends
// (with an error wrapping ctx.Err()) and, with a cap, fails with ErrTooLarge rather than
// return more than max bytes.
type guardedReader struct {
	ctx  context.Context
	rc   io.ReadCloser
	key  string
	max  int64 // the cap; 0 means none
	left int64 // bytes still allowed under the cap; -1 once exceeded
	err  error // sticky error once the cap is exceeded
}

// newGuardedReader wraps rc; max <= 0 means no cap.
func newGuardedReader(ctx context.Context, rc io.ReadCloser, key string, max int64) *guardedReader {
	if max < 0 {
		max = 0
	}
	return &guardedReader{ctx: ctx, rc: rc, key: key, max: max, left: max}
}

// Read implements io.Reader.
func (g *guardedReader) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	if err := g.ctx.Err(); err != nil {
		return 0, fmt.Errorf("storage: read %q: %w", g.key, err)
	}
	if g.max > 0 && int64(len(p)) > g.left+1 {
		// Ask for one byte more than allowed, to learn whether the object goes past the cap.
		p = p[:g.left+1]
	}
	n, err := g.rc.Read(p)
	if g.max > 0 {
		if int64(n) > g.left {
			n = int(g.left)
			g.left = -1
			g.err = fmt.Errorf("storage: read %q: %w (more than %d bytes)", g.key, ErrTooLarge, g.max)
			return n, g.err
		}
		g.left -= int64(n)
	}
	if err != nil && err != io.EOF {
		if cerr := g.ctx.Err(); cerr != nil {
			return n, fmt.Errorf("storage: read %q: %w", g.key, cerr)
		}
	}
	return n, err
}

// Close implements io.Closer.
func (g *guardedReader) Close() error { return g.rc.Close() }
