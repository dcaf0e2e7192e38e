package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/storage"
)

// MaxHeapGrowth bounds how much the process's heap may grow, and how much it may
// allocate in total, while a 32 MiB object streams in or out.
const MaxHeapGrowth = 8 << 20

// streamSize is the size of the object of the streaming test.
const streamSize = 32 << 20

// heavy keeps the memory-measuring test alone: it holds the lock exclusively while every
// other test of the suite, in any Run of this process, holds it shared.
var heavy sync.RWMutex

// Run runs the conformance suite. newBucket must return a new, empty Bucket for the test
// t, owned by it (newBucket registers the cleanup, Close included). The test measuring
// memory runs first, alone among the suite's tests of the whole process (Run may be
// called for several drivers at once); every other test runs in parallel. Each test logs
// the URL of the storage it runs against.
func Run(t *testing.T, newBucket func(t *testing.T) *storage.Bucket) {
	t.Helper()
	t.Run("Stream32MiB", func(t *testing.T) {
		heavy.Lock()
		defer heavy.Unlock()
		b := newBucket(t)
		t.Logf("storagetest: %s against %s", t.Name(), b.URL())
		testStream32MiB(t, b)
	})
	tests := []struct {
		name string
		fn   func(*testing.T, *storage.Bucket)
	}{
		{name: "RoundTrip", fn: testRoundTrip},
		{name: "ContentType", fn: testContentType},
		{name: "ETagChangesOnOverwrite", fn: testETagChanges},
		{name: "IfMatch", fn: testIfMatch},
		{name: "NotFound", fn: testNotFound},
		{name: "MaxBytes", fn: testMaxBytes},
		{name: "List2500", fn: testList2500},
		{name: "ListEdges", fn: testListEdges},
		{name: "ListParallel", fn: testListParallel},
		{name: "Keys", fn: testKeys},
		{name: "InvalidKey", fn: testInvalidKey},
		{name: "Delete", fn: testDelete},
		{name: "Sub", fn: testSub},
		{name: "SizeMismatch", fn: testSizeMismatch},
		{name: "ConcurrentOverwrite", fn: testConcurrentOverwrite},
		{name: "CancelPut", fn: testCancelPut},
		{name: "CancelGet", fn: testCancelGet},
		{name: "CancelledContext", fn: testCancelledContext},
		{name: "URL", fn: testURL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			heavy.RLock()
			t.Cleanup(heavy.RUnlock)
			b := newBucket(t)
			t.Logf("storagetest: %s against %s", t.Name(), b.URL())
			tc.fn(t, b)
		})
	}
}

// put stores data at key, failing the test on error.
func put(t *testing.T, b *storage.Bucket, key string, data []byte, contentType string) {
	t.Helper()
	err := b.Put(context.Background(), key, bytes.NewReader(data),
		&storage.PutOptions{ContentType: contentType, Size: int64(len(data))})
	require.NoError(t, err, "put %q", key)
}

// get reads the whole object at key.
func get(t *testing.T, b *storage.Bucket, key string) ([]byte, storage.Attributes) {
	t.Helper()
	r, err := b.Get(context.Background(), key, nil)
	require.NoError(t, err, "get %q", key)
	defer r.Close()
	data, err := io.ReadAll(r)
	require.NoError(t, err, "read %q", key)
	return data, r.Attributes
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]byte, n)
	for i := range out {
		out[i] = byte(r.Uint32())
	}
	return out
}

// listKeys lists prefix and returns the keys, failing the test on error.
func listKeys(t *testing.T, b *storage.Bucket, prefix string) []string {
	t.Helper()
	var keys []string
	for a, err := range b.List(context.Background(), prefix) {
		require.NoError(t, err, "list %q", prefix)
		keys = append(keys, a.Key)
	}
	return keys
}

func testRoundTrip(t *testing.T, b *storage.Bucket) {
	data := randomBytes(1, 100_000)
	put(t, b, "selfies/a.jpg", data, "image/jpeg")

	got, attrs := get(t, b, "selfies/a.jpg")
	require.True(t, bytes.Equal(data, got), "content differs: got %d bytes, want %d", len(got), len(data))
	require.Equal(t, "selfies/a.jpg", attrs.Key)
	require.Equal(t, int64(len(data)), attrs.Size)
	require.NotEmpty(t, attrs.ETag)
	require.NotContains(t, attrs.ETag, `"`, "ETag must come without quotes")
	require.Equal(t, "image/jpeg", attrs.ContentType)
	require.False(t, attrs.ModTime.IsZero(), "ModTime is zero")
	require.Equal(t, "UTC", attrs.ModTime.Location().String())

	st, err := b.Stat(context.Background(), "selfies/a.jpg")
	require.NoError(t, err)
	if diff := cmp.Diff(attrs, st); diff != "" {
		t.Errorf("Stat differs from Get's attributes (-get +stat):\n%s", diff)
	}

	// An empty object round-trips too, with or without a size.
	put(t, b, "empty", nil, "")
	got, attrs = get(t, b, "empty")
	require.Empty(t, got)
	require.Equal(t, int64(0), attrs.Size)
	require.NoError(t, b.Put(context.Background(), "empty2", strings.NewReader(""), nil))
	got, _ = get(t, b, "empty2")
	require.Empty(t, got)

	// Unknown size (nil options, a reader that is not a bytes.Reader).
	require.NoError(t, b.Put(context.Background(), "unknown.bin", io.MultiReader(bytes.NewReader(data)), nil))
	got, attrs = get(t, b, "unknown.bin")
	require.True(t, bytes.Equal(data, got), "content of unknown size differs")
	require.Equal(t, int64(len(data)), attrs.Size)
}

func testContentType(t *testing.T, b *storage.Bucket) {
	ctx := context.Background()
	for _, tc := range []struct {
		desc, key, given, want string
	}{
		{desc: "guessed from .png", key: "x.png", want: "image/png"},
		{desc: "guessed from upper-case .JPG", key: "y.JPG", want: "image/jpeg"},
		{desc: "unknown extension", key: "z.unknownext", want: "application/octet-stream"},
		{desc: "no extension", key: "noext", want: "application/octet-stream"},
	} {
		put(t, b, tc.key, []byte("x"), tc.given)
		a, err := b.Stat(ctx, tc.key)
		require.NoError(t, err, tc.desc)
		require.Equal(t, tc.want, a.ContentType, tc.desc)
	}
}

func testETagChanges(t *testing.T, b *storage.Bucket) {
	ctx := context.Background()
	put(t, b, "k", bytes.Repeat([]byte("a"), 1000), "")
	a1, err := b.Stat(ctx, "k")
	require.NoError(t, err)
	again, err := b.Stat(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, a1.ETag, again.ETag, "ETag must be stable while the object is unchanged")

	// Same size, other content, written right away.
	put(t, b, "k", bytes.Repeat([]byte("b"), 1000), "")
	a2, err := b.Stat(ctx, "k")
	require.NoError(t, err)
	require.NotEqual(t, a1.ETag, a2.ETag, "ETag must change when the content does")
	got, attrs := get(t, b, "k")
	require.Equal(t, bytes.Repeat([]byte("b"), 1000), got)
	require.Equal(t, a2.ETag, attrs.ETag)

	// Other objects have their own ETags.
	put(t, b, "other", []byte("different"), "")
	a3, err := b.Stat(ctx, "other")
	require.NoError(t, err)
	require.NotEqual(t, a2.ETag, a3.ETag)
}

func testIfMatch(t *testing.T, b *storage.Bucket) {
	ctx := context.Background()
	put(t, b, "m.jpg", []byte("version one"), "")
	a1, err := b.Stat(ctx, "m.jpg")
	require.NoError(t, err)

	r, err := b.Get(ctx, "m.jpg", &storage.GetOptions{IfMatch: a1.ETag})
	require.NoError(t, err, "IfMatch with the current ETag")
	data, err := io.ReadAll(r)
	r.Close()
	require.NoError(t, err)
	require.Equal(t, "version one", string(data))

	put(t, b, "m.jpg", []byte("version two"), "")
	_, err = b.Get(ctx, "m.jpg", &storage.GetOptions{IfMatch: a1.ETag})
	require.ErrorIs(t, err, storage.ErrChanged, "IfMatch with the previous ETag")
	require.Contains(t, err.Error(), "m.jpg")

	_, err = b.Get(ctx, "m.jpg", &storage.GetOptions{IfMatch: "0123456789abcdef0123456789abcdef"})
	require.ErrorIs(t, err, storage.ErrChanged, "IfMatch with a made-up ETag")

	_, err = b.Get(ctx, "missing.jpg", &storage.GetOptions{IfMatch: a1.ETag})
	require.ErrorIs(t, err, storage.ErrNotFound, "IfMatch on a missing key")
}

func testNotFound(t *testing.T, b *storage.Bucket) {
	ctx := context.Background()
	put(t, b, "dir/present", []byte("x"), "")
	for _, key := range []string{"absent", "dir/absent", "absent/deeper/key.jpg", "dir", "dir/present/below"} {
		_, err := b.Get(ctx, key, nil)
		require.ErrorIs(t, err, storage.ErrNotFound, "Get %q", key)
		require.Contains(t, err.Error(), key, "the error names the key")
		_, err = b.Stat(ctx, key)
		require.ErrorIs(t, err, storage.ErrNotFound, "Stat %q", key)
		require.NotErrorIs(t, err, storage.ErrAccessDenied)
	}
}

func testMaxBytes(t *testing.T, b *storage.Bucket) {
	ctx := context.Background()
	data := randomBytes(2, 1000)
	put(t, b, "cap.bin", data, "")
	for _, tc := range []struct {
		desc    string
		max     int64
		tooBig  bool
		wantLen int
	}{
		{desc: "no cap", max: 0, wantLen: 1000},
		{desc: "cap above the size", max: 5000, wantLen: 1000},
		{desc: "cap equal to the size", max: 1000, wantLen: 1000},
		{desc: "cap one byte short", max: 999, tooBig: true},
		{desc: "small cap", max: 10, tooBig: true},
	} {
		r, err := b.Get(ctx, "cap.bin", &storage.GetOptions{MaxBytes: tc.max})
		if tc.tooBig {
			require.ErrorIs(t, err, storage.ErrTooLarge, tc.desc)
			require.Contains(t, err.Error(), "cap.bin", tc.desc)
			continue
		}
		require.NoError(t, err, tc.desc)
		got, err := io.ReadAll(r)
		r.Close()
		require.NoError(t, err, tc.desc)
		require.Len(t, got, tc.wantLen, tc.desc)
	}
}

func testList2500(t *testing.T, b *storage.Bucket) {
	const n = 2500
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("list/k%04d.jpg", i)
	}
	// Keys around the prefix that must not show up.
	outside := []string{"lisa", "lisu/k0001.jpg", "a", "z/list/k0000.jpg", "list.jpg", "listing/k0000.jpg"}
	putMany(t, b, append(slices.Clone(want), outside...))

	got := listKeys(t, b, "list/")
	require.Len(t, got, n)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("List(\"list/\") (-want +got):\n%s", diff)
	}

	// A prefix that ends mid-name.
	got = listKeys(t, b, "list/k01")
	require.Equal(t, want[100:200], got)

	// Attributes come with each key.
	for a, err := range b.List(context.Background(), "list/k0000") {
		require.NoError(t, err)
		require.Equal(t, "list/k0000.jpg", a.Key)
		require.Equal(t, int64(len("list/k0000.jpg")), a.Size)
		require.NotEmpty(t, a.ETag)
		require.False(t, a.ModTime.IsZero())
	}

	// Stopping early stops the listing.
	var first []string
	for a, err := range b.List(context.Background(), "list/") {
		require.NoError(t, err)
		first = append(first, a.Key)
		if len(first) == 10 {
			break
		}
	}
	require.Equal(t, want[:10], first)

	// The whole bucket, in lexical order.
	all := listKeys(t, b, "")
	require.Len(t, all, n+len(outside))
	require.True(t, slices.IsSorted(all), "keys are not in lexical order")
}

// putMany stores each key (with the key as content), 32 at a time.
func putMany(t *testing.T, b *storage.Bucket, keys []string) {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	work := make(chan string)
	for range 32 {
		wg.Go(func() {
			for k := range work {
				err := b.Put(context.Background(), k, strings.NewReader(k), &storage.PutOptions{Size: int64(len(k))})
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, k := range keys {
		work <- k
	}
	close(work)
	wg.Wait()
	require.NoError(t, first)
}

func testListEdges(t *testing.T, b *storage.Bucket) {
	require.Empty(t, listKeys(t, b, ""), "a new bucket is empty")
	require.Empty(t, listKeys(t, b, "nothing/"))
	// Keys whose order differs from a naive directory walk: "a-b" < "a.b" < "a/b" < "a0".
	keys := []string{"a0", "a/b", "a.b", "a-b", "a/c/d", "a/c-d", "b"}
	putMany(t, b, keys)
	want := slices.Clone(keys)
	slices.Sort(want)
	require.Equal(t, want, listKeys(t, b, ""))
	require.Equal(t, []string{"a/b", "a/c-d", "a/c/d"}, listKeys(t, b, "a/"))
	require.Equal(t, []string{"a/c-d", "a/c/d"}, listKeys(t, b, "a/c"))
	require.Equal(t, []string{"a/c/d"}, listKeys(t, b, "a/c/"))
	require.Empty(t, listKeys(t, b, "a/c/d/"))
}

// testListParallel checks that ListParallel gives exactly what List gives, in the same
// order, for a tree with objects at every level, names that sort around '/', flat and
// deep "directories", from a view too; and that it stops cleanly.
func testListParallel(t *testing.T, b *storage.Bucket) {
	keys := []string{"t/a-b", "t/a.b", "t/a/b", "t/a/c/d", "t/a/c-d", "t/a/c/e/f/g.jpg", "t/a0", "t-x", "u",
		"t/f/g/h/i/j.jpg", "t/f/g/h.jpg", "t/f/g0"}
	for d := range 12 {
		for k := range 30 {
			keys = append(keys, fmt.Sprintf("t/d/%02d/%03d.jpg", d, k))
		}
		keys = append(keys, fmt.Sprintf("t/d/%02d.jpg", d))
	}
	for k := range 1100 { // more than a page
		keys = append(keys, fmt.Sprintf("t/flat/%04d.jpg", k))
	}
	putMany(t, b, keys)
	collect := func(seq func(func(storage.Attributes, error) bool)) []string {
		t.Helper()
		var got []string
		for a, err := range seq {
			require.NoError(t, err)
			got = append(got, a.Key)
		}
		return got
	}
	ctx := context.Background()
	for _, prefix := range []string{"", "t/", "t/a", "t/d/", "t/d/03/", "t/flat/", "nothing/"} {
		want := collect(b.List(ctx, prefix))
		for _, parallel := range []int{1, 2, 4, 16} {
			got := collect(b.ListParallel(ctx, prefix, parallel))
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("ListParallel(%q, %d) differs from List (-List +ListParallel):\n%s", prefix, parallel, diff)
			}
		}
	}
	sub := b.Sub("t")
	require.Equal(t, collect(sub.List(ctx, "d/")), collect(sub.ListParallel(ctx, "d/", 4)))

	// Stopping early, with listings still running ahead, ends them (goleak checks).
	var first []string
	for a, err := range b.ListParallel(ctx, "t/", 8) {
		require.NoError(t, err)
		if first = append(first, a.Key); len(first) == 50 {
			break
		}
	}
	require.Equal(t, collect(b.List(ctx, "t/"))[:50], first)
	// A context ended midway is an error.
	cctx, cancel := context.WithCancel(ctx)
	n := 0
	var lerr error
	for _, err := range b.ListParallel(cctx, "t/", 8) {
		if err != nil {
			lerr = err
			break
		}
		if n++; n == 20 {
			cancel()
		}
	}
	cancel()
	require.ErrorIs(t, lerr, context.Canceled)
}

func testKeys(t *testing.T, b *storage.Bucket) {
	keys := []string{
		"with space/a b.jpg",
		"ünïcødé/日本語の写真.jpg",
		"emoji 😀.png",
		"deep/a/b/c/d/e/f.txt",
		"plus+and%25percent.txt",
		"query?and#hash&amp=1.txt",
		"tilde~/(parens) [brackets] {braces}.txt",
		"quote'double\"back\\slash.txt",
		"..dots..",
		"trailing.",
		strings.Repeat("long/", 50) + "end",
	}
	for i, k := range keys {
		data := randomBytes(uint64(100+i), 100+i)
		put(t, b, k, data, "")
		got, attrs := get(t, b, k)
		require.True(t, bytes.Equal(data, got), "content of %q", k)
		require.Equal(t, k, attrs.Key)
	}
	want := slices.Clone(keys)
	slices.Sort(want)
	require.Equal(t, want, listKeys(t, b, ""))
	require.Equal(t, []string{"ünïcødé/日本語の写真.jpg"}, listKeys(t, b, "ünïcødé/日本"))
	for _, k := range keys {
		require.NoError(t, b.Delete(context.Background(), k))
	}
	require.Empty(t, listKeys(t, b, ""))
}

func testInvalidKey(t *testing.T, b *storage.Bucket) {
	ctx := context.Background()
	for _, tc := range []struct{ desc, key string }{
		{desc: "empty", key: ""},
		{desc: "NUL byte", key: "a\x00b"},
		{desc: "invalid UTF-8", key: "bad\xff.jpg"},
		{desc: "too long", key: strings.Repeat("k", storage.MaxKeyLen+1)},
	} {
		err := b.Put(ctx, tc.key, strings.NewReader("x"), nil)
		require.ErrorIs(t, err, storage.ErrInvalidKey, "Put: %s", tc.desc)
		_, err = b.Get(ctx, tc.key, nil)
		require.ErrorIs(t, err, storage.ErrInvalidKey, "Get: %s", tc.desc)
		_, err = b.Stat(ctx, tc.key)
		require.ErrorIs(t, err, storage.ErrInvalidKey, "Stat: %s", tc.desc)
		require.ErrorIs(t, b.Delete(ctx, tc.key), storage.ErrInvalidKey, "Delete: %s", tc.desc)
	}
}

func testDelete(t *testing.T, b *storage.Bucket) {
	ctx := context.Background()
	put(t, b, "d/x.jpg", []byte("x"), "")
	put(t, b, "d/y.jpg", []byte("y"), "")
	require.NoError(t, b.Delete(ctx, "d/x.jpg"))
	_, err := b.Stat(ctx, "d/x.jpg")
	require.ErrorIs(t, err, storage.ErrNotFound)
	_, err = b.Get(ctx, "d/x.jpg", nil)
	require.ErrorIs(t, err, storage.ErrNotFound)
	require.Equal(t, []string{"d/y.jpg"}, listKeys(t, b, ""))
	require.NoError(t, b.Delete(ctx, "d/x.jpg"), "deleting again")
	require.NoError(t, b.Delete(ctx, "never/was.jpg"), "deleting a key that never existed")

	// Deleting the last key under "d/" leaves no trace: "d" itself can become a key.
	require.NoError(t, b.Delete(ctx, "d/y.jpg"))
	require.Empty(t, listKeys(t, b, ""))
	put(t, b, "d", []byte("now a key"), "")
	got, _ := get(t, b, "d")
	require.Equal(t, "now a key", string(got))
}

func testSub(t *testing.T, b *storage.Bucket) {
	ctx := context.Background()
	sub := b.Sub("results")
	require.Equal(t, sub.URL(), b.Sub("results/").URL(), `Sub("results") and Sub("results/") are the same`)
	require.NotEqual(t, b.URL(), sub.URL())
	require.Contains(t, sub.URL(), "results")
	require.Equal(t, b.Name(), sub.Name())

	require.NoError(t, sub.Put(ctx, "a/k.json", strings.NewReader(`{}`), nil))
	got, attrs := get(t, b, "results/a/k.json")
	require.Equal(t, "{}", string(got))
	require.Equal(t, "results/a/k.json", attrs.Key)

	got, attrs = get(t, sub, "a/k.json")
	require.Equal(t, "{}", string(got))
	require.Equal(t, "a/k.json", attrs.Key, "keys of a view are relative to its prefix")
	st, err := sub.Stat(ctx, "a/k.json")
	require.NoError(t, err)
	require.Equal(t, "a/k.json", st.Key)

	put(t, b, "resultsx", []byte("outside"), "")
	put(t, b, "other/k.json", []byte("outside"), "")
	require.Equal(t, []string{"a/k.json"}, listKeys(t, sub, ""))
	require.Equal(t, []string{"k.json"}, listKeys(t, sub.Sub("a"), ""))

	require.NoError(t, sub.Close(), "closing a view does nothing")
	require.NoError(t, sub.Delete(ctx, "a/k.json"))
	_, err = b.Stat(ctx, "results/a/k.json")
	require.ErrorIs(t, err, storage.ErrNotFound)
}

func testSizeMismatch(t *testing.T, b *storage.Bucket) {
	ctx := context.Background()
	err := b.Put(ctx, "short", strings.NewReader("12345"), &storage.PutOptions{Size: 10})
	require.Error(t, err, "a reader shorter than Size")
	_, err = b.Stat(ctx, "short")
	require.ErrorIs(t, err, storage.ErrNotFound, "a failed Put leaves no object")

	err = b.Put(ctx, "long", io.MultiReader(strings.NewReader("1234567890")), &storage.PutOptions{Size: 5})
	require.Error(t, err, "a reader longer than Size")

	// A failed Put leaves the previous object as it was.
	put(t, b, "kept", []byte("original"), "")
	err = b.Put(ctx, "kept", strings.NewReader("12"), &storage.PutOptions{Size: 100})
	require.Error(t, err)
	got, _ := get(t, b, "kept")
	require.Equal(t, "original", string(got))
}

func testConcurrentOverwrite(t *testing.T, b *storage.Bucket) {
	ctx := context.Background()
	const size = 256 << 10
	versions := [][]byte{bytes.Repeat([]byte{'a'}, size), bytes.Repeat([]byte{'b'}, size)}
	put(t, b, "hot.bin", versions[0], "")
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	wg.Go(func() {
		for i := range 20 {
			v := versions[i%2]
			if err := b.Put(ctx, "hot.bin", bytes.NewReader(v), &storage.PutOptions{Size: size}); err != nil {
				errs <- err
				return
			}
		}
	})
	for range 3 {
		wg.Go(func() {
			for range 10 {
				r, err := b.Get(ctx, "hot.bin", nil)
				if err != nil {
					errs <- err
					return
				}
				data, err := io.ReadAll(r)
				r.Close()
				if err != nil {
					errs <- err
					return
				}
				if len(data) != size || (!bytes.Equal(data, versions[0]) && !bytes.Equal(data, versions[1])) {
					errs <- fmt.Errorf("read a torn object: %d bytes, first %q last %q", len(data), data[:1], data[len(data)-1:])
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	require.Equal(t, []string{"hot.bin"}, listKeys(t, b, ""), "no temporary object is visible")
}

// cancelAfter returns a reader of endless generated content that cancels its context
// once it has given n bytes, and counts the bytes it gave.
type cancelAfter struct {
	gen    *genReader
	n      int64
	cancel context.CancelFunc
	mu     sync.Mutex
	read   int64
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.gen.Read(p)
	c.mu.Lock()
	c.read += int64(n)
	if c.read >= c.n {
		c.cancel()
	}
	c.mu.Unlock()
	return n, err
}

func (c *cancelAfter) total() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.read
}

func testCancelPut(t *testing.T, b *storage.Bucket) {
	const huge = 1 << 30 // far more than the test sends, within S3's 5 GiB
	for _, tc := range []struct {
		desc string
		size int64
	}{
		{desc: "known size", size: huge},
		{desc: "unknown size", size: -1},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		src := &cancelAfter{gen: newGenReader(3, huge), n: 1 << 20, cancel: cancel}
		err := b.Put(ctx, "cancelled.bin", src, &storage.PutOptions{Size: tc.size})
		cancel()
		require.Error(t, err, tc.desc)
		require.ErrorIs(t, err, context.Canceled, "%s: %v", tc.desc, err)
		require.Less(t, src.total(), int64(64<<20), "%s: Put kept reading after its context ended", tc.desc)
		_, err = b.Stat(context.Background(), "cancelled.bin")
		require.ErrorIs(t, err, storage.ErrNotFound, "%s: a cancelled Put leaves no object", tc.desc)
	}
	require.Empty(t, listKeys(t, b, ""), "no temporary object is visible")
}

func testCancelGet(t *testing.T, b *storage.Bucket) {
	const size = 8 << 20
	require.NoError(t, b.Put(context.Background(), "big.bin", newGenReader(4, size), &storage.PutOptions{Size: size}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := b.Get(ctx, "big.bin", nil)
	require.NoError(t, err)
	defer r.Close()
	buf := make([]byte, 1<<20)
	_, err = io.ReadFull(r, buf)
	require.NoError(t, err)
	cancel()
	n, err := io.Copy(io.Discard, r)
	require.ErrorIs(t, err, context.Canceled, "reading after the context ended")
	require.Less(t, n, int64(size-(1<<20)), "the reader went on to the end")
}

func testCancelledContext(t *testing.T, b *storage.Bucket) {
	put(t, b, "k", []byte("x"), "")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := b.Get(ctx, "k", nil)
	require.ErrorIs(t, err, context.Canceled, "Get")
	_, err = b.Stat(ctx, "k")
	require.ErrorIs(t, err, context.Canceled, "Stat")
	require.ErrorIs(t, b.Put(ctx, "k", strings.NewReader("y"), nil), context.Canceled, "Put")
	require.ErrorIs(t, b.Delete(ctx, "k"), context.Canceled, "Delete")
	for _, err := range b.List(ctx, "") {
		require.ErrorIs(t, err, context.Canceled, "List")
	}
	got, _ := get(t, b, "k")
	require.Equal(t, "x", string(got), "nothing changed")
}

func testURL(t *testing.T, b *storage.Bucket) {
	u := b.URL()
	require.NotEmpty(t, u)
	require.Equal(t, u, b.URL(), "URL is stable")
	require.True(t, strings.HasPrefix(u, "s3://") || strings.HasPrefix(u, "file:///"), "URL %q", u)
	require.NotEmpty(t, b.Name())
	require.Equal(t, b.Sub("x").URL(), b.Sub("x").URL())
}

func testStream32MiB(t *testing.T, b *storage.Bucket) {
	ctx := context.Background()
	for _, tc := range []struct {
		desc string
		key  string
		size int64
	}{
		{desc: "known size", key: "stream/known.bin", size: streamSize},
		{desc: "unknown size", key: "stream/unknown.bin", size: -1},
	} {
		src := newGenReader(5, streamSize)
		probe := newHeapProbe()
		src.every(1<<20, probe.sample)
		require.NoError(t, b.Put(ctx, tc.key, src, &storage.PutOptions{Size: tc.size}), tc.desc)
		growth, total := probe.done()
		t.Logf("put 32 MiB (%s): heap peak +%.2f MiB, allocated %.2f MiB", tc.desc, mib(growth), mib(total))
		require.Less(t, growth, uint64(MaxHeapGrowth), "put (%s): heap grew too much", tc.desc)
		require.Less(t, total, uint64(MaxHeapGrowth), "put (%s): allocated too much", tc.desc)
		want := src.sum()

		probe = newHeapProbe()
		r, err := b.Get(ctx, tc.key, &storage.GetOptions{MaxBytes: streamSize})
		require.NoError(t, err)
		require.Equal(t, int64(streamSize), r.Size)
		sink := &hashSink{h: sha256.New(), every: 1 << 20, sample: probe.sample}
		n, err := io.Copy(sink, r)
		r.Close()
		require.NoError(t, err)
		growth, total = probe.done()
		t.Logf("get 32 MiB (%s): heap peak +%.2f MiB, allocated %.2f MiB", tc.desc, mib(growth), mib(total))
		require.Equal(t, int64(streamSize), n)
		require.Equal(t, want, sink.h.Sum(nil), "content differs")
		require.Less(t, growth, uint64(MaxHeapGrowth), "get (%s): heap grew too much", tc.desc)
		require.Less(t, total, uint64(MaxHeapGrowth), "get (%s): allocated too much", tc.desc)
	}
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// genReader gives n pseudo-random bytes without holding them, hashing them as it goes.
// It is for one reader at a time.
type genReader struct {
	left   int64
	state  uint64
	h      hash.Hash
	given  int64
	step   int64
	next   int64
	onStep func()
}

func newGenReader(seed uint64, n int64) *genReader {
	return &genReader{left: n, state: seed*0x9e3779b97f4a7c15 + 1, h: sha256.New()}
}

// every calls fn each time another step bytes have been read.
func (g *genReader) every(step int64, fn func()) { g.step, g.next, g.onStep = step, step, fn }

func (g *genReader) Read(p []byte) (int, error) {
	if g.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	n := 0
	var word [8]byte
	for n < len(p) {
		g.state ^= g.state << 13
		g.state ^= g.state >> 7
		g.state ^= g.state << 17
		binary.LittleEndian.PutUint64(word[:], g.state)
		n += copy(p[n:], word[:])
	}
	// The content depends on how it is read (a partial word is not carried over); the
	// hash records exactly what was given.
	g.h.Write(p[:n])
	g.left -= int64(n)
	g.given += int64(n)
	if g.onStep != nil && g.given >= g.next {
		g.next += g.step
		g.onStep()
	}
	return n, nil
}

// sum returns the SHA-256 of what was read.
func (g *genReader) sum() []byte { return g.h.Sum(nil) }

// hashSink hashes what is written to it, calling sample every so many bytes.
type hashSink struct {
	h      hash.Hash
	n      int64
	every  int64
	next   int64
	sample func()
}

func (s *hashSink) Write(p []byte) (int, error) {
	s.h.Write(p)
	s.n += int64(len(p))
	if s.n >= s.next {
		s.next += s.every
		s.sample()
	}
	return len(p), nil
}

// heapProbe measures how the heap grows (peak HeapAlloc over a baseline taken after a
// GC) and how much is allocated (TotalAlloc) between its creation and done.
type heapProbe struct {
	mu   sync.Mutex
	base runtime.MemStats
	peak uint64
}

func newHeapProbe() *heapProbe {
	runtime.GC()
	p := &heapProbe{}
	runtime.ReadMemStats(&p.base)
	p.peak = p.base.HeapAlloc
	return p
}

func (p *heapProbe) sample() {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	p.mu.Lock()
	p.peak = max(p.peak, m.HeapAlloc)
	p.mu.Unlock()
}

// done returns the peak heap growth and the bytes allocated since the probe began.
func (p *heapProbe) done() (growth, allocated uint64) {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.peak = max(p.peak, m.HeapAlloc)
	return p.peak - p.base.HeapAlloc, m.TotalAlloc - p.base.TotalAlloc
}
