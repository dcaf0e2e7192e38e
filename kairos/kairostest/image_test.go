package kairostest_test

import (
	"bytes"
	"image"
	"image/jpeg"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/kairos/kairostest"
)

func TestImages(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc   string
		make   func(w, h int, seed int64) []byte
		format string
	}{
		{desc: "jpeg", make: kairostest.JPEG, format: "jpeg"},
		{desc: "png", make: kairostest.PNG, format: "png"},
		{desc: "jpeg sized", make: func(w, h int, seed int64) []byte {
			return kairostest.JPEGSized(w, h, seed, 100<<10)
		}, format: "jpeg"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			a := tc.make(640, 480, 1)
			require.Equal(t, a, tc.make(640, 480, 1), "deterministic")
			require.NotEqual(t, a, tc.make(640, 480, 2), "seeds differ")

			// The whole image decodes, not just its header.
			img, format, err := image.Decode(bytes.NewReader(a))
			require.NoError(t, err)
			require.Equal(t, tc.format, format)
			require.Equal(t, image.Rect(0, 0, 640, 480), img.Bounds())

			cfg, _, err := image.DecodeConfig(bytes.NewReader(tc.make(301, 5000, 3)))
			require.NoError(t, err)
			require.Equal(t, [2]int{301, 5000}, [2]int{cfg.Width, cfg.Height})
		})
	}
}

func TestJPEGSized(t *testing.T) {
	t.Parallel()
	for _, want := range []int{0, 10 << 10, 100 << 10, 300 << 10} {
		b := kairostest.JPEGSized(900, 900, 5, want)
		base := len(kairostest.JPEG(900, 900, 5))
		if want <= base {
			require.Equal(t, base, len(b))
			continue
		}
		require.InDelta(t, want, len(b), 4, "size for %d", want)
		_, err := jpeg.Decode(bytes.NewReader(b))
		require.NoError(t, err)
	}
}

func TestImagePanicsOnBadSize(t *testing.T) {
	t.Parallel()
	require.Panics(t, func() { kairostest.JPEG(0, 10, 1) })
	require.Panics(t, func() { kairostest.PNG(10, -1, 1) })
}

func BenchmarkImages(b *testing.B) {
	kairostest.JPEGSized(1000, 1000, 0, 100<<10) // warm the cache
	b.Run("JPEGSized100KB", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			kairostest.JPEGSized(1000, 1000, int64(i), 100<<10)
		}
	})
	b.Run("PNG", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			kairostest.PNG(1000, 1000, int64(i))
		}
	})
}
