package main

import (
	"encoding/csv"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/results"
)

func TestResultsGetAndExport(t *testing.T) {
	ob := opsSetup(t, 0)
	bin := buildBinary(t)
	recs := []*results.Record{
		record("selfies/a.jpg", "b-exp", results.StatusLive, 0.88),
		record("selfies/b, with comma.jpg", "b-exp", results.StatusNotLive, 0.12),
		record("selfies/c.jpg", "b-exp", results.StatusNoFace, 0),
	}
	ob.writeBatch(t, "b-exp", recs...)
	keys := []string{recs[0].Key, recs[1].Key, recs[2].Key}

	// get: the record as stored.
	want, err := ob.store.Get(ob.ctx, recs[0].Key)
	require.NoError(t, err)
	r := runCmd(t, bin, ob.env(), "results", "get", recs[0].Key)
	require.Equal(t, 0, r.code, r.stderr)
	got, err := results.UnmarshalRecord([]byte(r.stdout))
	require.NoError(t, err)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("results get (-want +got):\n%s", d)
	}

	// Flags may follow the key.
	r = runCmd(t, bin, nil, "results", "get", recs[2].Key, "--redis", ob.redisURL)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"status": "no_face"`)

	r = runCmd(t, bin, ob.env(), "results", "get", "selfies/nope.jpg")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, `no result for key "selfies/nope.jpg"`)

	// Redis lost the key's result: get finds it in storage, when told where.
	require.NoError(t, ob.rdb.Del(ob.ctx, results.ResultKey(recs[1].Key)).Err())
	r = runCmd(t, bin, []string{"LIVENESSQ_REDIS_URL=" + ob.redisURL}, "results", "get", recs[1].Key)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "give --storage")
	r = runCmd(t, bin, ob.env(), "results", "get", recs[1].Key)
	require.Equal(t, 0, r.code, r.stderr)
	got, err = results.UnmarshalRecord([]byte(r.stdout))
	require.NoError(t, err)
	require.Equal(t, recs[1].Key, got.Key)
	require.Equal(t, results.StatusNotLive, got.Status)

	// export jsonl to stdout: every record once.
	r = runCmd(t, bin, ob.env(), "results", "export", "--batch", "b-exp")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "exported 3 results of batch b-exp")
	var exported []string
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		rec, err := results.UnmarshalRecord([]byte(line))
		require.NoError(t, err, line)
		require.Equal(t, "b-exp", rec.BatchID)
		exported = append(exported, rec.Key)
	}
	slices.Sort(exported)
	require.Equal(t, keys, exported)

	// export csv to a file.
	out := filepath.Join(t.TempDir(), "b-exp.csv")
	r = runCmd(t, bin, append(ob.env(), "LIVENESSQ_BATCH=b-exp"), "results", "export", "--format", "csv", "--output", out)
	require.Equal(t, 0, r.code, r.stderr)
	require.Empty(t, r.stdout)
	f, err := os.Open(out)
	require.NoError(t, err)
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 4)
	require.Equal(t, results.CSVHeader, rows[0])
	exported = nil
	for _, row := range rows[1:] {
		exported = append(exported, row[0])
	}
	slices.Sort(exported)
	require.Equal(t, keys, exported)
	entries, err := os.ReadDir(filepath.Dir(out))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file left behind")

	// Errors.
	for _, tc := range []struct {
		desc string
		args []string
		code int
		msg  string
	}{
		{desc: "no subcommand", args: []string{"results"}, code: 2, msg: "a subcommand is required"},
		{desc: "unknown subcommand", args: []string{"results", "list"}, code: 2, msg: `unknown subcommand "list"`},
		{desc: "get without key", args: []string{"results", "get"}, code: 2, msg: "exactly one KEY"},
		{desc: "export without batch", args: []string{"results", "export"}, code: 2, msg: "--batch"},
		{desc: "bad format", args: []string{"results", "export", "--batch", "b-exp", "--format", "xml"}, code: 2, msg: "--format"},
		{desc: "unknown batch", args: []string{"results", "export", "--batch", "b-none"}, code: 1, msg: `batch "b-none" not found`},
	} {
		r := runCmd(t, bin, ob.env(), tc.args...)
		require.Equal(t, tc.code, r.code, tc.desc)
		require.Contains(t, r.stderr, tc.msg, tc.desc)
	}
	target := filepath.Join(t.TempDir(), "kept.csv")
	require.NoError(t, os.WriteFile(target, []byte("old"), 0o600))
	r = runCmd(t, bin, ob.env(), "results", "export", "--batch", "b-none", "--output", target)
	require.Equal(t, 1, r.code)
	b, err := os.ReadFile(target)
	require.NoError(t, err)
	require.Equal(t, "old", string(b), "a failed export leaves the existing file alone")

	// `results --help` lists both subcommands' flags.
	r = runCmd(t, bin, nil, "results", "--help")
	require.Equal(t, 0, r.code)
	for _, s := range []string{"get KEY", "export --batch ID", "--format", "--output", "[$LIVENESSQ_REDIS_URL]"} {
		require.Contains(t, r.stdout, s)
	}
}

func TestParseInterspersed(t *testing.T) {
	t.Parallel()
	env := &environ{getenv: func(string) string { return "" }, stdout: &strings.Builder{}, stderr: &strings.Builder{}}
	var f resultsFlags
	var verbose bool
	fs := resultsFlagSet(env, &f)
	fs.BoolVar(&verbose, "v", false, "")
	pos, err := parseInterspersed(fs, []string{"k1", "--batch", "b", "-v", "k2", "--format=csv", "--", "--not-a-flag"})
	require.NoError(t, err)
	require.Equal(t, []string{"k1", "k2", "--not-a-flag"}, pos)
	require.Equal(t, "b", f.batch)
	require.Equal(t, "csv", f.format)
	require.True(t, verbose)
	_, err = parseInterspersed(resultsFlagSet(env, &resultsFlags{}), []string{"k", "--nope"})
	var ue *usageError
	require.ErrorAs(t, err, &ue)
}
