package main

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

var updateSample = flag.Bool("update-sample", false, "rewrite the repository's testdata/sample from sampleSet()")

// repoSampleDir is the shipped sample set, relative to this package.
var repoSampleDir = filepath.Join("..", "..", defaultSampleDir)

// The repository ships the sample set so that `livenessq run` shows every outcome on a
// fresh clone; it must hold exactly the files sampleSet describes (regenerate with
// go test ./cmd/livenessq -run TestSampleSetIsShipped -update-sample).
func TestSampleSetIsShipped(t *testing.T) {
	t.Parallel()
	if *updateSample {
		require.NoError(t, os.RemoveAll(repoSampleDir))
		require.NoError(t, writeSampleSet(repoSampleDir))
	}
	entries, err := os.ReadDir(repoSampleDir)
	require.NoError(t, err, "the sample set is missing: run this test with -update-sample")
	var got, want []string
	var total int64
	for _, e := range entries {
		if e.Name() == "results" { // written by `livenessq run`
			continue
		}
		got = append(got, e.Name())
		info, err := e.Info()
		require.NoError(t, err)
		total += info.Size()
	}
	for _, f := range sampleSet() {
		want = append(want, f.name)
	}
	slices.Sort(want)
	require.Equal(t, want, got, "testdata/sample differs from sampleSet(): run this test with -update-sample")
	require.Less(t, total, int64(1<<20), "the sample set must stay small")
}

func TestSampleSetCoversEveryOutcomeTheEmulatorCanShow(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, f := range sampleSet() {
		seen[string(f.want)] = true
	}
	for _, s := range []string{"live", "not_live", "no_face", "invalid_image", "rejected"} {
		require.True(t, seen[s], "no sample file ends %s", s)
	}
}
