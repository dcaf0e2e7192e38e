package enqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/livenessq/livenessq/storage"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
)

// drained is everything a Source yielded.
type drained struct {
	items []Item
	rows  []int // line numbers of row errors
	fatal error
}

// drain ranges over src to its end.
func drain(t *testing.T, src Source) drained {
	t.Helper()
	var d drained
	for it, err := range src {
		if d.fatal != nil {
			t.Fatalf("source yielded after a fatal error %v", d.fatal)
		}
		var re *RowError
		switch {
		case errors.As(err, &re):
			require.Positive(t, re.Line, "row error %v has a line", err)
			d.rows = append(d.rows, re.Line)
		case err != nil:
			d.fatal = err
		default:
			d.items = append(d.items, it)
		}
	}
	return d
}

func item(key string, line int) Item { return Item{Key: key, Line: line} }

func itemT(key string, line int, thr float64) Item {
	return Item{Key: key, Line: line, Threshold: &thr}
}

func TestSources(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc      string
		src       Source
		wantItems []Item
		wantRows  []int // line numbers of the row errors
		wantFatal error // errors.Is target; errAny for any
	}{
		{
			desc:      "keys",
			src:       Keys("a.jpg", "", "b c.jpg"),
			wantItems: []Item{item("a.jpg", 1), item("b c.jpg", 3)},
			wantRows:  []int{2},
		},
		{
			desc:      "keys file with blank lines and CRLF",
			src:       KeysReader(strings.NewReader("a.jpg\r\n\r\n  \nb.jpg\n\n with space .jpg \r\nlast")),
			wantItems: []Item{item("a.jpg", 1), item("b.jpg", 4), item(" with space .jpg ", 6), item("last", 7)},
		},
		{
			desc:      "keys file with BOM",
			src:       KeysReader(strings.NewReader("\xef\xbb\xbfa.jpg\nb.jpg\n")),
			wantItems: []Item{item("a.jpg", 1), item("b.jpg", 2)},
		},
		{
			desc:      "keys file with a line too long",
			src:       KeysReader(strings.NewReader("a\n" + strings.Repeat("x", maxLine+3) + "\nb\n")),
			wantItems: []Item{item("a", 1), item("b", 3)},
			wantRows:  []int{2},
		},
		{
			desc:      "keys file read error is fatal",
			src:       KeysReader(io.MultiReader(strings.NewReader("a\nb\n"), iotest.ErrReader(errBoom))),
			wantItems: []Item{item("a", 1), item("b", 2)},
			wantFatal: errBoom,
		},
		{
			desc:      "empty keys file",
			src:       KeysReader(strings.NewReader("")),
			wantItems: nil,
		},
		{
			desc:      "CSV without threshold",
			src:       Manifest(strings.NewReader("key\na.jpg\nb.jpg\n"), ManifestCSV),
			wantItems: []Item{item("a.jpg", 2), item("b.jpg", 3)},
		},
		{
			desc: "CSV with threshold, extra columns, CRLF, blank lines",
			src: Manifest(strings.NewReader(
				"id,Key, Threshold ,note\r\n1,a.jpg,0.7,x\r\n\r\n2,b.jpg,,y\r\n3,\"c, d.jpg\",1,\"multi\nline\"\r\n4,e.jpg,0\r\n"), ManifestCSV),
			wantItems: []Item{itemT("a.jpg", 2, 0.7), item("b.jpg", 4), itemT("c, d.jpg", 5, 1), itemT("e.jpg", 7, 0)},
		},
		{
			desc: "CSV malformed rows",
			src: Manifest(strings.NewReader(
				"key,threshold\n"+ // 1
					"ok1.jpg,0.5\n"+ // 2
					",0.5\n"+ // 3 missing key
					"bad.jpg,high\n"+ // 4 not a number
					"neg.jpg,-1\n"+ // 5
					"two.jpg,2\n"+ // 6
					"nan.jpg,NaN\n"+ // 7
					"a\"b.jpg,0.1\n"+ // 8 bare quote
					"short\n"+ // 9 fewer cells: no threshold
					" , \n"+ // 10 blank cells: skipped
					"ok2.jpg,0.9\n"), ManifestCSV),
			wantItems: []Item{itemT("ok1.jpg", 2, 0.5), item("short", 9), itemT("ok2.jpg", 11, 0.9)},
			wantRows:  []int{3, 4, 5, 6, 7, 8},
		},
		{
			desc:      "CSV header without key",
			src:       Manifest(strings.NewReader("name,threshold\na.jpg,0.5\n"), ManifestCSV),
			wantFatal: ErrBadManifest,
		},
		{
			desc:      "CSV auto-detected after blank lines and BOM",
			src:       Manifest(strings.NewReader("\xef\xbb\xbf\n\n  key\na.jpg\n"), ManifestAuto),
			wantItems: []Item{item("a.jpg", 4)},
		},
		{
			desc: "JSONL",
			src: Manifest(strings.NewReader(
				`{"key":"a.jpg"}`+"\n"+
					`{"key":"b.jpg","threshold":0.8,"extra":true}`+"\r\n"+
					"\n"+
					`{"key":"c d.jpg","threshold":null}`), ManifestJSONL),
			wantItems: []Item{item("a.jpg", 1), itemT("b.jpg", 2, 0.8), item("c d.jpg", 4)},
		},
		{
			desc: "JSONL malformed rows",
			src: Manifest(strings.NewReader(
				`{"key":"ok1.jpg"}`+"\n"+ // 1
					`{"key":`+"\n"+ // 2 bad JSON
					`{"threshold":0.5}`+"\n"+ // 3 missing key
					`{"key":""}`+"\n"+ // 4 empty key
					`{"key":"s.jpg","threshold":"0.5"}`+"\n"+ // 5 not a number
					`{"key":"two.jpg","threshold":2}`+"\n"+ // 6
					`{"key":"neg.jpg","threshold":-1}`+"\n"+ // 7
					`{"key":7}`+"\n"+ // 8
					`"just a string"`+"\n"+ // 9
					`{"key":"ok2.jpg","threshold":1}`+"\n"), ManifestJSONL),
			wantItems: []Item{item("ok1.jpg", 1), itemT("ok2.jpg", 10, 1)},
			wantRows:  []int{2, 3, 4, 5, 6, 7, 8, 9},
		},
		{
			desc:      "JSONL auto-detected after blank lines",
			src:       Manifest(strings.NewReader("\n \r\n{\"key\":\"a.jpg\"}\n{\"key\":\"b.jpg\"}"), ManifestAuto),
			wantItems: []Item{item("a.jpg", 3), item("b.jpg", 4)},
		},
		{
			desc:      "empty manifest",
			src:       Manifest(strings.NewReader(" \n\n"), ManifestAuto),
			wantItems: nil,
		},
		{
			desc:      "manifest read error is fatal",
			src:       Manifest(io.MultiReader(strings.NewReader("{\"key\":\"a\"}\n"), iotest.ErrReader(errBoom)), ManifestAuto),
			wantItems: []Item{item("a", 1)},
			wantFatal: errBoom,
		},
		{
			desc:      "unknown format",
			src:       Manifest(strings.NewReader("key\na\n"), ManifestFormat(9)),
			wantFatal: ErrBadManifest,
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			got := drain(t, tt.src)
			if diff := cmp.Diff(tt.wantItems, got.items); diff != "" {
				t.Errorf("items (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantRows, got.rows); diff != "" {
				t.Errorf("row error lines (-want +got):\n%s", diff)
			}
			if tt.wantFatal == nil {
				require.NoError(t, got.fatal)
			} else {
				require.ErrorIs(t, got.fatal, tt.wantFatal)
			}
		})
	}
}

var errBoom = errors.New("boom")

func TestRowErrorMessages(t *testing.T) {
	t.Parallel()
	var msgs []string
	for _, err := range Manifest(strings.NewReader("key,threshold\na.jpg,2\nb.jpg,NaN\n,0.5\n"), ManifestAuto) {
		require.Error(t, err)
		msgs = append(msgs, err.Error())
	}
	want := []string{
		`line 2 (key "a.jpg"): threshold must be a number in [0, 1], got 2`,
		`line 3 (key "b.jpg"): threshold must be a number in [0, 1], got NaN`,
		`line 4: missing key`,
	}
	if diff := cmp.Diff(want, msgs); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
}

func TestRowErrorJSON(t *testing.T) {
	t.Parallel()
	b, err := json.Marshal([]RowError{
		{Line: 3, Key: "a.jpg", Err: fmt.Errorf("%w, got 2", ErrBadThreshold)},
		{Line: 4, Err: errors.New("missing key")},
	})
	require.NoError(t, err)
	require.JSONEq(t, `[{"line":3,"key":"a.jpg","error":"threshold must be a number in [0, 1], got 2"},{"line":4,"error":"missing key"}]`, string(b))
}

func TestSourceStopsEarly(t *testing.T) {
	t.Parallel()
	for _, src := range []Source{
		Keys("a", "b", "c"),
		KeysReader(strings.NewReader("a\nb\nc\n")),
		Manifest(strings.NewReader("key\na\nb\nc\n"), ManifestCSV),
		Manifest(strings.NewReader("{\"key\":\"a\"}\n{\"key\":\"b\"}\n"), ManifestJSONL),
	} {
		n := 0
		for range src {
			n++
			break
		}
		require.Equal(t, 1, n)
	}
}

func TestParseManifestFormat(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]ManifestFormat{"": ManifestAuto, "auto": ManifestAuto, "CSV": ManifestCSV, "jsonl": ManifestJSONL, "ndjson": ManifestJSONL} {
		got, err := ParseManifestFormat(in)
		require.NoError(t, err)
		require.Equal(t, want, got)
		if in != "" && in != "ndjson" {
			require.Equal(t, strings.ToLower(in), got.String())
		}
	}
	_, err := ParseManifestFormat("xml")
	require.ErrorIs(t, err, ErrBadManifest)
}

func FuzzManifest(f *testing.F) {
	f.Add([]byte("key,threshold\na.jpg,0.5\n\"b,c\",\n"), uint8(ManifestAuto))
	f.Add([]byte("{\"key\":\"a\",\"threshold\":1}\n{\"key\":\n\n"), uint8(ManifestAuto))
	f.Add([]byte("\xef\xbb\xbfid,key\r\n1,x\r\n"), uint8(ManifestCSV))
	f.Add([]byte("a\nb\r\n\n"), uint8(3)) // 3: KeysReader
	f.Fuzz(func(t *testing.T, b []byte, format uint8) {
		var src Source
		if format%4 == 3 {
			src = KeysReader(strings.NewReader(string(b)))
		} else {
			src = Manifest(strings.NewReader(string(b)), ManifestFormat(format%4))
		}
		lines := strings.Count(string(b), "\n") + 1
		last, fatal := 0, false
		for it, err := range src {
			if fatal {
				t.Fatal("yield after a fatal error")
			}
			var re *RowError
			line := it.Line
			switch {
			case errors.As(err, &re):
				line = re.Line
			case err != nil:
				fatal = true
				continue
			default:
				if it.Key == "" {
					t.Fatalf("item with an empty key at line %d", it.Line)
				}
				if it.Threshold != nil {
					if err := ValidateThreshold(*it.Threshold); err != nil {
						t.Fatalf("item with a bad threshold: %v", err)
					}
				}
			}
			if line < 1 || line > lines || line < last {
				t.Fatalf("line %d out of order or range (last %d, %d lines)", line, last, lines)
			}
			last = line
		}
	})
}

func TestPrefixLocal(t *testing.T) {
	t.Parallel()
	b, err := storage.NewLocal(storage.LocalConfig{Root: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	for _, k := range []string{"in/a.jpg", "in/b c.jpg", "in/sub/d.jpg", "in/results/a.jpg.json", "out/e.jpg"} {
		require.NoError(t, b.Put(t.Context(), k, strings.NewReader("x"), &storage.PutOptions{Size: 1}))
	}
	got := drain(t, Prefix(t.Context(), b, "in/", "in/results/"))
	require.NoError(t, got.fatal)
	want := []Item{item("in/a.jpg", 1), item("in/b c.jpg", 2), item("in/sub/d.jpg", 3)}
	if diff := cmp.Diff(want, got.items); diff != "" {
		t.Errorf("items (-want +got):\n%s", diff)
	}

	// Stopping early stops the listing.
	n := 0
	for range Prefix(t.Context(), b, "") {
		n++
		break
	}
	require.Equal(t, 1, n)

	// A cancelled context ends the listing with a fatal error.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	got = drain(t, Prefix(ctx, b, ""))
	require.ErrorIs(t, got.fatal, context.Canceled)
}
