package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livenessq/livenessq/kairos/kairostest"
	"github.com/livenessq/livenessq/storage"
)

// benchSet is a set of objects the bench uploads once to its bucket and reuses across
// scenarios (and across runs, with --data-dir): n objects, key(i) and body(i) for i in
// [0, n). A marker object records that the whole set is there.
type benchSet struct {
	name   string
	n      int
	conc   int // uploads at once; 0: the caller's default
	key    func(i int) string
	body   func(i int) []byte
	approx int64 // approximate size of one object, for the log
}

// Key prefixes of the bench's sets.
const (
	benchPrefix100K   = "s100k/"
	benchPrefixSmall  = "s5k/"
	benchPrefix5M     = "s5m/"
	benchMarkerPrefix = "_bench/"
)

// selfies100K is the set of ~100 KB 1000×1000 JPEGs.
func selfies100K(n int) benchSet {
	return benchSet{
		name:   "s100k",
		n:      n,
		key:    func(i int) string { return fmt.Sprintf("%s%05d.jpg", benchPrefix100K, i) },
		body:   func(i int) []byte { return kairostest.JPEGSized(1000, 1000, int64(i), 100<<10) },
		approx: 100 << 10,
	}
}

// selfiesSmall is the set of ~5 KB 400×400 JPEGs the budget scenario uses, so that the
// machine's CPU, rather than the budget, is not what limits the rate.
func selfiesSmall(n int) benchSet {
	return benchSet{
		name:   "s5k",
		n:      n,
		key:    func(i int) string { return fmt.Sprintf("%s%05d.jpg", benchPrefixSmall, i) },
		body:   func(i int) []byte { return kairostest.JPEG(400, 400, int64(i)) },
		approx: 5 << 10,
	}
}

// selfies5M is the set of ~5 MB 3000×3000 JPEGs. Their bytes are a noisy picture (the
// entropy-coded data really is 5 MB), not padding: kairostest.JPEGSized pads with
// comment segments placed before the frame header, so a decoder must read all 5 MB to
// learn the dimensions, and the worker's pre-check (which reads at most 512 KiB of
// header) rightly calls such a file invalid.
func selfies5M(n int) benchSet {
	return benchSet{
		name:   "s5m",
		n:      n,
		conc:   4,
		key:    func(i int) string { return fmt.Sprintf("%s%04d.jpg", benchPrefix5M, i) },
		body:   func(i int) []byte { return withSeed(noisyJPEG(3000, 3000), i) },
		approx: 5 << 20,
	}
}

// benchPrefixEnq is where the enqueue scenario's n keys are: a prefix per n, so that a
// smaller run in a reused data directory does not list a bigger one's keys too.
func benchPrefixEnq(n int) string { return fmt.Sprintf("enq/%d/", n) }

// benchPrefixEnqA holds the first 10,000 keys of benchPrefixEnq(n).
func benchPrefixEnqA(n int) string { return benchPrefixEnq(n) + "a/" }

// enqueueKeys is the set of n one-byte objects the enqueue scenario lists: the first
// 10,000 under benchPrefixEnqA(n), the rest under …/b/, 1,000 per "directory".
func enqueueKeys(n int) benchSet {
	return benchSet{
		name: "enq-sized", // the marker of the layout with a prefix per n
		n:    n,
		key: func(i int) string {
			part := "a"
			if i >= 10000 {
				part = "b"
			}
			return fmt.Sprintf("%s%s/%03d/%06d.jpg", benchPrefixEnq(n), part, i/1000, i)
		},
		body:   func(int) []byte { return []byte{'x'} },
		approx: 1,
	}
}

// ensure uploads the set unless its marker says it is already there; concurrency
// uploads run at once.
func (s benchSet) ensure(ctx context.Context, b *storage.Bucket, concurrency int, logf func(string, ...any)) error {
	marker := benchMarkerPrefix + s.name + "-" + strconv.Itoa(s.n) + ".done"
	_, err := b.Stat(ctx, marker)
	if err == nil {
		logf("objects: %d × %s under %s already uploaded", s.n, humanBytes(s.approx), s.key(0))
		return nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("check %s: %w", marker, err)
	}
	if s.conc > 0 {
		concurrency = s.conc
	}
	logf("objects: uploading %d × ~%s (%s…) …", s.n, humanBytes(s.approx), s.key(0))
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, concurrency)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range concurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= s.n || ctx.Err() != nil {
					return
				}
				body := s.body(i)
				if err := b.Put(ctx, s.key(i), bytes.NewReader(body), &storage.PutOptions{Size: int64(len(body)), ContentType: "image/jpeg"}); err != nil {
					errs <- fmt.Errorf("upload %s: %w", s.key(i), err)
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := b.Put(ctx, marker, bytes.NewReader(nil), &storage.PutOptions{Size: 0}); err != nil {
		return fmt.Errorf("write %s: %w", marker, err)
	}
	logf("objects: uploaded %d in %v", s.n, time.Since(start).Round(time.Millisecond))
	return nil
}

// noisyJPEGCache holds the one encoding of each size noisyJPEG made.
var noisyJPEGCache sync.Map // [2]int → []byte

// noisyJPEG returns a w×h colour JPEG of a gradient with noise, about 0.55 bytes per
// pixel at quality 90 (5 MB at 3000×3000), deterministic; encoded once per size.
func noisyJPEG(w, h int) []byte {
	k := [2]int{w, h}
	if b, ok := noisyJPEGCache.Load(k); ok {
		return b.([]byte)
	}
	img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	rnd := rand.New(rand.NewPCG(8, 5))
	const amp = 60
	for y := range h {
		row := img.Y[y*img.YStride : y*img.YStride+w]
		for x := range row {
			row[x] = uint8(max(0, min(255, 60+150*x/w+rnd.IntN(amp)-amp/2)))
		}
	}
	for i := range img.Cb {
		img.Cb[i] = uint8(128 + rnd.IntN(amp/2+1) - amp/4)
		img.Cr[i] = uint8(128 + rnd.IntN(amp/2+1) - amp/4)
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
		panic("bench: encode a test image: " + err.Error())
	}
	b, _ := noisyJPEGCache.LoadOrStore(k, buf.Bytes())
	return b.([]byte)
}

// withSeed returns a copy of the JPEG base with a comment segment naming seed right after
// its start-of-image marker, so that every object's bytes (and ETag) differ.
func withSeed(base []byte, seed int) []byte {
	tag := []byte("livenessq bench seed=" + strconv.Itoa(seed))
	out := make([]byte, 0, len(base)+4+len(tag))
	out = append(out, base[:2]...)
	out = append(out, 0xff, 0xfe)
	out = binary.BigEndian.AppendUint16(out, uint16(len(tag)+2))
	out = append(out, tag...)
	return append(out, base[2:]...)
}

// humanBytes formats n as B, KB or MB (powers of 1024).
func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}
