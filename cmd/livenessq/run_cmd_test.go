package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/results"
	"github.com/livenessq/livenessq/storage"
)

// copySample copies the shipped sample set to dir/testdata/sample, as a fresh clone has it.
func copySample(t *testing.T, dir string) string {
	t.Helper()
	dst := filepath.Join(dir, defaultSampleDir)
	require.NoError(t, os.MkdirAll(dst, 0o755))
	entries, err := os.ReadDir(repoSampleDir)
	require.NoError(t, err)
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(repoSampleDir, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644))
	}
	return dst
}

// statusCounts reads the summary's table of counts per status.
func statusCounts(t *testing.T, stdout string) map[string]int {
	t.Helper()
	counts := map[string]int{}
	re := regexp.MustCompile(`(?m)^([a-z_]+)\s+(\d+)$`)
	for _, m := range re.FindAllStringSubmatch(stdout, -1) {
		n := 0
		for _, c := range m[2] {
			n = n*10 + int(c-'0')
		}
		counts[m[1]] = n
	}
	return counts
}

// The README's first command, on a fresh clone: the shipped sample set, in-process Redis,
// the built-in emulator; every outcome shows, results land next to the selfies.
func TestRunSampleSetShowsEveryStatus(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	dir := t.TempDir()
	sample := copySample(t, dir)

	r := runSpec(t, cmdSpec{bin: bin, dir: dir, args: []string{"run"}})
	require.Equal(t, 0, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)

	counts := statusCounts(t, r.stdout)
	want := map[string]int{}
	for _, f := range sampleSet() {
		if f.want != "" {
			want[string(f.want)]++
		}
	}
	for status, n := range want {
		if status == string(results.StatusLive) || status == string(results.StatusNotLive) {
			require.GreaterOrEqual(t, counts[status], n, "%s in:\n%s", status, r.stdout)
			continue
		}
		require.Equal(t, n, counts[status], "%s in:\n%s", status, r.stdout)
	}
	require.Equal(t, len(sampleSet()), counts["total"], r.stdout)
	require.Equal(t, counts["total"], counts["live"]+counts["not_live"]+counts["no_face"]+counts["invalid_image"]+counts["rejected"], r.stdout)

	require.Contains(t, r.stdout, "scores (")
	require.Equal(t, results.HistogramBins, len(regexp.MustCompile(`(?m)^  \d\.\d\d–\d\.\d\d `).FindAllString(r.stdout, -1)), "a 20-bin histogram:\n%s", r.stdout)
	require.Contains(t, r.stdout, "← threshold")
	resultsDir, err := filepath.EvalSymlinks(filepath.Join(sample, "results"))
	require.NoError(t, err)
	require.Contains(t, r.stdout, "results: "+resultsDir)
	require.Regexp(t, `batch:\s+\d{8}T\d{6}Z-[0-9a-f]{6}`, r.stdout)

	require.Contains(t, r.stderr, "using the built-in Kairos emulator")
	require.Contains(t, r.stderr, "using in-process Redis")
	require.Contains(t, r.stderr, "17/17 100%")

	// One result JSON per selfie, with the status the sample set promises.
	for _, f := range sampleSet() {
		b, err := os.ReadFile(filepath.Join(sample, "results", f.name+".json"))
		require.NoError(t, err, f.name)
		rec, err := results.UnmarshalRecord(b)
		require.NoError(t, err)
		if f.want != "" {
			require.Equal(t, f.want, rec.Status, f.name)
		}
	}

	// A second run lists the same selfies again, not the results written next to them.
	r = runSpec(t, cmdSpec{bin: bin, dir: dir, args: []string{"run"}})
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, len(sampleSet()), statusCounts(t, r.stdout)["total"], r.stdout)
}

// Outside the repository (no testdata/sample), run writes the sample set to a temporary
// directory and says where.
func TestRunWithoutSampleDirGeneratesIt(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	cache := t.TempDir()
	r := runSpec(t, cmdSpec{bin: bin, dir: t.TempDir(), env: []string{"XDG_CACHE_HOME=" + cache},
		args: []string{"run", "--concurrency", "4"}})
	require.Equal(t, 0, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	require.Contains(t, r.stderr, "wrote the sample set to "+filepath.Join(cache, "livenessq", "sample"))
	require.Equal(t, len(sampleSet()), statusCounts(t, r.stdout)["total"], r.stdout)
	for _, s := range []string{"live", "not_live", "no_face", "invalid_image", "rejected"} {
		require.Positive(t, statusCounts(t, r.stdout)[s], "%s in:\n%s", s, r.stdout)
	}
}

// With --redis, run uses the real Redis: the batch outlives the process (the summary
// points at `results export`), and keys given as arguments can name a missing object.
func TestRunOnRealRedisKeepsTheBatch(t *testing.T) {
	rdb, redisURL := cmdRedis(t)
	bin := buildBinary(t)
	dir := t.TempDir()
	sample := copySample(t, dir)

	r := runCmd(t, bin, nil, "run", "--redis", redisURL, "--storage", sample, "--batch", "run-real-redis",
		"live-01.jpg", "spoof-01.jpg", "missing-selfie.jpg")
	require.Equal(t, 0, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	require.NotContains(t, r.stderr, "in-process Redis")
	counts := statusCounts(t, r.stdout)
	require.Equal(t, map[string]int{"live": 1, "not_live": 1, "not_found": 1, "total": 3}, counts, r.stdout)
	require.Contains(t, r.stdout, "livenessq results export --batch run-real-redis")

	res, err := storage.NewLocal(storage.LocalConfig{Root: filepath.Join(sample, "results")})
	require.NoError(t, err)
	store, err := results.New(results.Config{Redis: rdb, Bucket: res})
	require.NoError(t, err)
	sum, err := store.Batch(context.Background(), "run-real-redis")
	require.NoError(t, err)
	require.True(t, sum.Complete)
	require.Equal(t, int64(3), sum.Done)
	require.Equal(t, int64(1), sum.Counts[results.StatusNotFound])
	var export bytes.Buffer
	n, err := store.Export(context.Background(), "run-real-redis", results.FormatJSONL, &export)
	require.NoError(t, err)
	require.Equal(t, 3, n)
}

// With credentials set, run calls the API they are for (here an emulator process that
// knows the key) and never prints the key.
func TestRunWithCredentialsCallsTheGivenAPI(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	emu, apiURL := startEmulator(t, bin, "--sample-rules")
	dir := t.TempDir()
	sample := copySample(t, dir)
	r := runCmd(t, bin, []string{"KAIROS_APP_ID=" + testAppID, "KAIROS_APP_KEY=" + testAppKey, "KAIROS_API_URL=" + apiURL},
		"run", "--storage", sample, "--log-level", "debug")
	require.Equal(t, 0, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	require.Contains(t, r.stderr, "calling the Kairos API at "+apiURL)
	require.NotContains(t, r.stderr, "built-in Kairos emulator")
	require.Equal(t, len(sampleSet()), statusCounts(t, r.stdout)["total"], r.stdout)
	require.NotContains(t, r.output(), testAppKey)

	code, body := httpGet(t, strings.TrimSuffix(apiURL, "/v0.2/liveness-verification")+"/_emulator/stats")
	require.Equal(t, 200, code)
	require.Contains(t, body, `"total":`)
	require.NotContains(t, body, `"total":0`, "the emulator process was called")
	require.Equal(t, 0, emu.stop())
}

// Refused credentials pause the queue: run stops with the reason rather than wait forever.
func TestRunStopsWhenCredentialsAreRefused(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	_, apiURL := startEmulator(t, bin)
	sample := copySample(t, t.TempDir())
	r := runCmd(t, bin, []string{"KAIROS_APP_ID=" + testAppID, "KAIROS_APP_KEY=not-the-key", "KAIROS_API_URL=" + apiURL},
		"run", "--storage", sample)
	require.Equal(t, 1, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	require.Contains(t, r.stderr, "paused")
	require.Contains(t, r.stderr, "credentials")
	require.NotContains(t, r.output(), "not-the-key")
}

func TestRunProgressLine(t *testing.T) {
	t.Parallel()
	s := &results.BatchSummary{Enqueued: 100, Done: 25}
	line := runProgressLine(s, true, 5*time.Second)
	require.Contains(t, line, "25/100")
	require.Contains(t, line, " 25%")
	require.Contains(t, line, "5.0/s")
	require.Contains(t, line, "ETA 15s")
	require.Contains(t, runProgressLine(s, false, 5*time.Second), "25/100+", "a total still growing")
	require.Contains(t, runProgressLine(s, false, 5*time.Second), "ETA --")
	s.Done = 100
	require.Contains(t, runProgressLine(s, true, 4*time.Second), "done in 4s")
}

func TestWriteRunSummary(t *testing.T) {
	t.Parallel()
	s := &results.BatchSummary{
		Info:   results.BatchInfo{ID: "b1"},
		Counts: map[results.Status]int64{results.StatusLive: 3, results.StatusNoFace: 1},
		Done:   4,
		Flips:  map[string]int64{results.FlipName(results.StatusLive, results.StatusNotLive): 2},
	}
	s.Histogram[19] = 2
	s.Histogram[12] = 1
	var b strings.Builder
	writeRunSummary(&b, s, runInfo{elapsed: 2 * time.Second, threshold: 0.6, results: "file:///data/results",
		batchID: "b1", malformed: []enqueue.RowError{{Line: 3, Err: enqueue.ErrBadKey}}, malformedN: 1})
	out := b.String()
	require.Contains(t, out, "batch b1: 4 selfies verified in 2s (2.0/s)")
	require.Regexp(t, `(?m)^live\s+3$`, out)
	require.Regexp(t, `(?m)^no_face\s+1$`, out)
	require.NotRegexp(t, `(?m)^not_live\s`, out, "statuses without results are left out")
	require.Regexp(t, `(?m)^total\s+4$`, out)
	require.Contains(t, out, "line 3: invalid key")
	require.Regexp(t, `(?m)^  0\.95–1\.00 #{40} 2$`, out, "the fullest bin spans the width")
	require.Regexp(t, `(?m)^  0\.60–0\.65 #{20}\s+1  ← threshold$`, out)
	require.Contains(t, out, "live → not_live")
	require.Contains(t, out, "results: /data/results")
	require.Contains(t, out, "livenessq results export --batch b1")
}
