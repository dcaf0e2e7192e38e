package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/storage"
)

func TestEnqueueFlagErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	conn := []string{"--redis", "redis://127.0.0.1:1", "--storage", dir}
	args := func(a ...string) []string { return append(append([]string{"enqueue"}, conn...), a...) }
	checkFlagErrors(t, []flagErrorCase{
		{desc: "no source", args: args(), want: []string{"nothing to enqueue", "--keys-file", "--manifest", "--prefix"}},
		{desc: "two sources", args: args("--prefix", "a/", "k1"), want: []string{"exactly one source"}},
		{desc: "threshold 2", args: args("--threshold", "2", "k1"), want: []string{"--threshold", "(0, 1]"}},
		{desc: "threshold -1", args: args("--threshold", "-1", "k1"), want: []string{"--threshold", "(0, 1]"}},
		{desc: "threshold NaN", args: args("--threshold", "NaN", "k1"), want: []string{"--threshold", "(0, 1]"}},
		{desc: "threshold not a number", args: args("--threshold", "high", "k1"), want: []string{"-threshold"}},
		{desc: "manifest format", args: args("--manifest", "m.csv", "--manifest-format", "xml"), want: []string{"--manifest-format", "auto, csv, jsonl"}},
		{desc: "manifest missing", args: args("--manifest", filepath.Join(dir, "nope.csv")), want: []string{"--manifest"}},
		{desc: "batch id", args: args("--batch", "a{b}", "k1"), want: []string{"--batch"}},
		{desc: "callback", args: args("--callback-url", "ftp://x/y", "k1"), want: []string{"--callback-url"}},
		{desc: "max attempts", args: args("--max-attempts", "1", "k1"), want: []string{"--max-attempts"}},
		{desc: "redis scheme", args: []string{"enqueue", "--redis", "ftp://x", "--storage", dir, "k1"}, want: []string{"--redis", "ftp"}},
		{desc: "storage missing", args: []string{"enqueue", "--redis", "redis://127.0.0.1:1", "k1"}, want: []string{"--storage"}},
	})
}

// Every source, on the real Redis: a manifest with a malformed row (reported with its
// line number, the rest enqueued), keys from stdin, and a resumed batch.
func TestEnqueueSources(t *testing.T) {
	rdb, redisURL := cmdRedis(t)
	bin := buildBinary(t)
	dir := t.TempDir()
	env := []string{"LIVENESSQ_REDIS_URL=" + redisURL, "LIVENESSQ_STORAGE_URL=" + dir}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	pending := func() int {
		info, err := insp.GetQueueInfo(enqueue.DefaultQueue)
		require.NoError(t, err)
		return info.Pending
	}

	manifest := filepath.Join(dir, "m.csv")
	require.NoError(t, os.WriteFile(manifest, []byte("key,threshold\na.jpg,0.7\n\nb.jpg,2\nc.jpg,\nd.jpg,abc\ne.jpg,0.9\n"), 0o644))
	r := runCmd(t, bin, env, "enqueue", "--manifest", manifest, "--batch", "manifest-1")
	require.Equal(t, 0, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	require.Regexp(t, `(?m)^batch\s+manifest-1$`, r.stdout)
	require.Regexp(t, `(?m)^enqueued\s+3$`, r.stdout)
	require.Regexp(t, `(?m)^malformed\s+2$`, r.stdout)
	require.Contains(t, r.stdout, "line 4")
	require.Contains(t, r.stdout, "line 6")
	require.Equal(t, 3, pending())

	// The same batch again: nothing new, everything already there.
	r = runCmd(t, bin, env, "enqueue", "--manifest", manifest, "--batch", "manifest-1", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var rep enqueueReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), r.stdout)
	require.Equal(t, "manifest-1", rep.BatchID)
	require.False(t, rep.Created)
	require.Equal(t, int64(0), rep.Enqueued)
	require.Equal(t, int64(3), rep.Duplicates)
	require.Equal(t, int64(2), rep.Malformed)
	require.Len(t, rep.Errors, 2)
	require.Equal(t, 4, rep.Errors[0].Line)
	require.Equal(t, 3, pending())

	// Keys on stdin, JSONL manifest on stdin.
	r = runSpec(t, cmdSpec{bin: bin, env: env, stdin: strings.NewReader("x/1.jpg\n\nx/2.jpg\r\n"), args: []string{"enqueue", "--keys-file", "-", "--json"}})
	require.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), r.stdout)
	require.Equal(t, int64(2), rep.Enqueued)
	require.NotEmpty(t, rep.BatchID)
	r = runSpec(t, cmdSpec{bin: bin, env: env, stdin: strings.NewReader(`{"key":"y.jpg","threshold":0.8}` + "\n"), args: []string{"enqueue", "--manifest", "-"}})
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, 6, pending())

	// A prefix listing skips the results written under the same storage.
	for _, k := range []string{"p/1.jpg", "p/2.jpg", "results/p/1.jpg.json"} {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, k)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, k), []byte("x"), 0o644))
	}
	r = runCmd(t, bin, env, "enqueue", "--prefix", "", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), r.stdout)
	require.Equal(t, int64(3), rep.Enqueued, "p/1.jpg, p/2.jpg and m.csv, not the results")
}

func TestResultsSkip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src, err := storage.NewLocal(storage.LocalConfig{Root: dir})
	require.NoError(t, err)
	inside, err := storage.NewLocal(storage.LocalConfig{Root: filepath.Join(dir, "out", "res"), Create: true})
	require.NoError(t, err)
	outside, err := storage.NewLocal(storage.LocalConfig{Root: t.TempDir()})
	require.NoError(t, err)
	require.Equal(t, []string{DefaultResultsPrefix}, resultsSkip(src, src.Sub(DefaultResultsPrefix), false))
	require.Equal(t, []string{"out/res/"}, resultsSkip(src, inside, true))
	require.Empty(t, resultsSkip(src, outside, true))
	require.Empty(t, resultsSkip(src, src, true), "results at the very root cannot be told apart")
}

func TestEnqueueProgressLine(t *testing.T) {
	t.Parallel()
	line := enqueueProgressLine(enqueue.Progress{BatchID: "b", Read: 5000, Enqueued: 4990, Duplicates: 5, Malformed: 5, Elapsed: 2 * time.Second}, true)
	require.Equal(t, "enqueue b: listed 5000, enqueued 4990, already there 5, malformed 5  (2500/s, 2s)", line)
}

func TestProgressWithoutTerminal(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	p := newProgress(&out, 5*time.Second)
	now := time.Unix(0, 0)
	p.now = func() time.Time { return now }
	p.update("first") // starts the clock, prints nothing: short runs stay quiet
	now = now.Add(time.Second)
	p.update("early")
	now = now.Add(5 * time.Second)
	p.update("later")
	p.finish("end")
	require.Equal(t, "later\nend\n", out.String())
}
