package results

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
)

func TestParseFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		in   string
		want Format
		ok   bool
	}{
		{desc: "jsonl", in: "jsonl", want: FormatJSONL, ok: true},
		{desc: "ndjson alias, any case", in: " NDJSON ", want: FormatJSONL, ok: true},
		{desc: "csv", in: "CSV", want: FormatCSV, ok: true},
		{desc: "json is not jsonl", in: "json"},
		{desc: "empty", in: ""},
	}
	for _, tt := range tests {
		got, err := ParseFormat(tt.in)
		if !tt.ok {
			require.ErrorIs(t, err, ErrInvalidFormat, tt.desc)
			continue
		}
		require.NoError(t, err, tt.desc)
		require.Equal(t, tt.want, got, tt.desc)
	}
}

// writeMany records n results of batch id, with keys under prefix, in Redis with 16
// writers and returns them by key. It skips the storage write, which Export never reads.
func writeMany(t *testing.T, tb *testBundle, id, prefix string, n int) map[string]*Record {
	t.Helper()
	recs := make(map[string]*Record, n)
	for i := range n {
		var r *Record
		switch i % 4 {
		case 0:
			r = newRecord(fmt.Sprintf("%s%05d.jpg", prefix, i), id, StatusLive, 0.6+float64(i%40)/100)
		case 1:
			r = newRecord(fmt.Sprintf("%s%05d.jpg", prefix, i), id, StatusNotLive, float64(i%60)/100)
		case 2:
			r = newRecord(fmt.Sprintf("%s%05d.png", prefix, i), id, StatusInvalidImage, 0)
			r.Reason = `height 5001 px is over 5000 px, "quoted", with a comma`
		default:
			r = newRecord(fmt.Sprintf("%sodd, name %05d\n.jpg", prefix, i), id, StatusNotFound, 0)
		}
		recs[r.Key] = r
	}
	work := make(chan *Record)
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for r := range work {
				if err := tb.writeRedis(tb.ctx, r); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for _, r := range recs {
		work <- r
	}
	close(work)
	wg.Wait()
	close(errs)
	require.NoError(t, <-errs)
	return recs
}

// TestExport: both formats stream every record of a 2,500-record batch exactly once.
func TestExport(t *testing.T) {
	{
		tb := setup(t, openLocal)
		const n = 2500
		want := writeMany(t, tb, "x", "selfies/", n)
		writeMany(t, tb, "other", "selfies/", 10) // another batch is not exported

		t.Run("jsonl", func(t *testing.T) {
			var buf bytes.Buffer
			got, err := tb.store.Export(tb.ctx, "x", FormatJSONL, &buf)
			require.NoError(t, err)
			require.Equal(t, n, got)
			seen := map[string]bool{}
			sc := bufio.NewScanner(&buf)
			for sc.Scan() {
				r, err := UnmarshalRecord(sc.Bytes())
				require.NoError(t, err)
				require.False(t, seen[r.Key], "%q exported twice", r.Key)
				seen[r.Key] = true
				if d := cmp.Diff(want[r.Key], r); d != "" {
					t.Fatalf("record %q (-want +got):\n%s", r.Key, d)
				}
			}
			require.NoError(t, sc.Err())
			require.Len(t, seen, n)
		})

		t.Run("csv", func(t *testing.T) {
			var buf bytes.Buffer
			got, err := tb.store.Export(tb.ctx, "x", FormatCSV, &buf)
			require.NoError(t, err)
			require.Equal(t, n, got)
			rows, err := csv.NewReader(&buf).ReadAll()
			require.NoError(t, err)
			require.Equal(t, CSVHeader, rows[0])
			require.Len(t, rows, n+1)
			seen := map[string]bool{}
			for _, row := range rows[1:] {
				require.Len(t, row, len(CSVHeader))
				col := map[string]string{}
				for i, h := range CSVHeader {
					col[h] = row[i]
				}
				r := want[col["key"]]
				require.NotNil(t, r, "unknown key %q", col["key"])
				require.False(t, seen[r.Key], "%q exported twice", r.Key)
				seen[r.Key] = true
				require.Equal(t, string(r.Status), col["status"])
				require.Equal(t, "x", col["batch_id"])
				require.Equal(t, r.Reason, col["reason"])
				require.Equal(t, r.VerifiedAt.Format("2006-01-02T15:04:05.999999999Z07:00"), col["verified_at"])
				if r.Score == nil {
					require.Empty(t, col["score"])
					require.Empty(t, col["live"])
					require.Empty(t, col["width"])
				} else {
					s, err := strconv.ParseFloat(col["score"], 64)
					require.NoError(t, err)
					require.Equal(t, *r.Score, s)
					require.Equal(t, strconv.FormatBool(*r.Live), col["live"])
					require.Equal(t, "1000", col["width"])
					require.Equal(t, "uid-"+r.Key, col["api_req_uid"])
				}
			}
			require.Len(t, seen, n)
		})
	}
}

// TestExportWhileHashShrinks: HSCAN returns elements twice when the hash shrinks
// mid-scan; the export still writes every key that stayed exactly once.
func TestExportWhileHashShrinks(t *testing.T) {
	tb := setup(t, openLocal)
	kept := writeMany(t, tb, "x", "selfies/", 500)
	// Fill the hash to an 8192-bucket table with results that are removed mid-export.
	const extra = 6000
	data, err := MarshalRecord(newRecord("extra", "x", StatusNoFace, 0))
	require.NoError(t, err)
	pipe := tb.rdb.Pipeline()
	for i := range extra {
		pipe.HSet(tb.ctx, BatchResultsKey("x"), fmt.Sprintf("extra/%05d", i), data)
	}
	_, err = pipe.Exec(tb.ctx)
	require.NoError(t, err)

	pr, pw := io.Pipe()
	exported := make(chan error, 1)
	go func() {
		_, err := tb.store.Export(tb.ctx, "x", FormatJSONL, pw)
		pw.CloseWithError(err)
		exported <- err
	}()
	seen := map[string]bool{}
	sc := bufio.NewScanner(pr)
	for i := 0; sc.Scan(); i++ {
		r, err := UnmarshalRecord(sc.Bytes())
		require.NoError(t, err)
		if r.Key == "extra" {
			continue
		}
		require.False(t, seen[r.Key], "%q exported twice", r.Key)
		seen[r.Key] = true
		if i == 0 {
			// The export is blocked on the pipe, mid-scan: shrink the table (Redis
			// resizes a hash after a delete leaves it under 10% full).
			pipe := tb.rdb.Pipeline()
			for j := range extra {
				pipe.HDel(tb.ctx, BatchResultsKey("x"), fmt.Sprintf("extra/%05d", j))
			}
			_, err := pipe.Exec(tb.ctx)
			require.NoError(t, err)
		}
	}
	require.NoError(t, sc.Err())
	require.NoError(t, <-exported)
	require.Len(t, seen, len(kept))
}

func TestExportUnknownBatch(t *testing.T) {
	tb := setup(t, openLocal)
	_, err := tb.store.Export(tb.ctx, "nope", FormatCSV, io.Discard)
	require.ErrorIs(t, err, ErrBatchNotFound)
	_, err = tb.store.Export(tb.ctx, "nope", Format("xml"), io.Discard)
	require.ErrorIs(t, err, ErrInvalidFormat)

	// A created batch without results exports a header only.
	_, err = tb.store.CreateBatch(tb.ctx, BatchInfo{ID: "empty"})
	require.NoError(t, err)
	var buf bytes.Buffer
	n, err := tb.store.Export(tb.ctx, "empty", FormatCSV, &buf)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Equal(t, "key,bucket,etag,batch_id,status,score,threshold,live,faces,format,width,height,bytes,"+
		"low_resolution,reason,api_req_uid,request_id,attempts,verified_at,previous_status,previous_score\n", buf.String())
}
