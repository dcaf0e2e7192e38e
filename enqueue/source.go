package enqueue

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"strconv"
	"strings"

	"github.com/livenessq/livenessq/storage"
)

// Item is one key to verify, as a Source yields it.
type Item struct {
	// Key is the object key relative to the batch's storage.
	Key string
	// Threshold is this row's liveness threshold; nil means the batch's.
	Threshold *float64
	// Line is where the item came from: its line in a file or manifest, its position
	// (from 1) in a list of keys or a listing.
	Line int
}

// Source yields the items of an enqueue run, in order, as a range-over-func iterator.
//
// A non-nil error is either a row error (a *RowError, found with errors.As): that row is
// skipped and the rest still come; or a fatal error (e.g. the underlying reader or
// listing failed): it is the last thing the source yields. The Item is meaningless when
// the error is non-nil. Sources read lazily, one item at a time, so that memory stays
// flat however many keys there are; most can be ranged over only once.
type Source = iter.Seq2[Item, error]

// RowError is a problem with one row of a source (a malformed manifest line, an invalid
// key or threshold). It does not stop the rest of the source.
type RowError struct {
	Line int    // the row's line (or position) in its source, from 1
	Key  string // the row's key when it could be read, else empty
	Err  error  // what is wrong
}

// Error returns "line N: ..." (with the key when known).
func (e *RowError) Error() string {
	if e.Key != "" {
		return fmt.Sprintf("line %d (key %q): %v", e.Line, e.Key, e.Err)
	}
	return fmt.Sprintf("line %d: %v", e.Line, e.Err)
}

// Unwrap returns the cause.
func (e *RowError) Unwrap() error { return e.Err }

// MarshalJSON writes {"line": N, "key": "...", "error": "..."}, the key omitted when
// unknown.
func (e RowError) MarshalJSON() ([]byte, error) {
	msg := ""
	if e.Err != nil {
		msg = e.Err.Error()
	}
	return json.Marshal(struct {
		Line  int    `json:"line"`
		Key   string `json:"key,omitempty"`
		Error string `json:"error"`
	}{e.Line, e.Key, msg})
}

// maxLine caps the length of one line of a keys file or JSONL manifest; a longer line
// is a row error, skipped without being held in memory.
const maxLine = 64 << 10

// Keys returns a Source over the given keys, in order, with Line set to each key's
// position (from 1). Empty keys are row errors.
func Keys(keys ...string) Source {
	return func(yield func(Item, error) bool) {
		for i, k := range keys {
			var ok bool
			if k == "" {
				ok = yield(Item{}, &RowError{Line: i + 1, Err: fmt.Errorf("%w: empty key", ErrBadKey)})
			} else {
				ok = yield(Item{Key: k, Line: i + 1}, nil)
			}
			if !ok {
				return
			}
		}
	}
}

// KeysReader returns a Source reading one key a line from r. A trailing "\r" is removed
// (CRLF files work) and nothing else: keys may contain spaces. Lines that are empty or
// hold only white space are skipped. A line longer than 64 KiB is a row error. A read
// error from r is fatal. r is read as the source is ranged over; the source can be ranged
// over once.
func KeysReader(r io.Reader) Source {
	return func(yield func(Item, error) bool) {
		lr := newLineReader(r, 0)
		for {
			line, n, tooLong, err := lr.next()
			if err == io.EOF {
				return
			}
			if err != nil {
				yield(Item{}, fmt.Errorf("read keys: %w", err))
				return
			}
			var ok bool
			switch {
			case tooLong:
				ok = yield(Item{}, &RowError{Line: n, Err: fmt.Errorf("line longer than %d bytes", maxLine)})
			case isBlank(line):
				continue
			default:
				ok = yield(Item{Key: string(line), Line: n}, nil)
			}
			if !ok {
				return
			}
		}
	}
}

// prefixReadAhead is how many listed keys Prefix holds while they wait to be enqueued:
// about two pages of an S3 listing, so that the next page is being fetched while the
// last one is enqueued.
const prefixReadAhead = 2048

// prefixListings is how many listings Prefix runs at once over the sub-prefixes of a
// tree of keys (storage.Bucket.ListParallel).
const prefixListings = 8

// Prefix returns a Source over the keys of b that start with prefix ("" for all), in
// order, as the listing streams them page by page; the "directories" below prefix are
// listed up to prefixListings at a time. The listing runs ahead of the consumer by a
// bounded number of pages (about three per running listing), so that listing and
// enqueueing overlap and memory stays flat for millions of keys. Keys starting with any
// of skip (e.g. the "results/" prefix when results are written to the same bucket) and
// directory markers (keys ending in "/") are left out. Line is the position of the key among those yielded, from 1. A listing
// error is fatal; ctx bounds the listing (pass the one given to Enqueue). Stopping the
// range stops the listing.
func Prefix(ctx context.Context, b *storage.Bucket, prefix string, skip ...string) Source {
	return func(yield func(Item, error) bool) {
		type listed struct {
			key string
			err error
		}
		// stop (and lctx, to cut a request short) end the lister when the consumer stops;
		// a listing error, ctx's included, is always delivered.
		lctx, cancel := context.WithCancel(ctx)
		stop := make(chan struct{})
		ch := make(chan listed, prefixReadAhead)
		go func() {
			defer close(ch)
		keys:
			for a, err := range b.ListParallel(lctx, prefix, prefixListings) {
				var l listed
				switch {
				case err != nil:
					l.err = fmt.Errorf("list %q: %w", prefix, err)
				case strings.HasSuffix(a.Key, "/"):
					continue
				default:
					for _, s := range skip {
						if s != "" && strings.HasPrefix(a.Key, s) {
							continue keys
						}
					}
					l.key = a.Key
				}
				select {
				case ch <- l:
				case <-stop:
					return
				}
				if err != nil {
					return
				}
			}
		}()
		defer func() {
			close(stop)
			cancel()
			for range ch { // let the lister end
			}
		}()
		n := 0
		for l := range ch {
			if l.err != nil {
				yield(Item{}, l.err)
				return
			}
			n++
			if !yield(Item{Key: l.key, Line: n}, nil) {
				return
			}
		}
	}
}

// ManifestFormat selects how Manifest reads its input.
type ManifestFormat int

const (
	// ManifestAuto detects the format from the first non-blank byte: '{' is JSONL,
	// anything else CSV.
	ManifestAuto ManifestFormat = iota
	// ManifestCSV is CSV with a header row naming a "key" column and optionally a
	// "threshold" column (names are case-insensitive; other columns are ignored).
	ManifestCSV
	// ManifestJSONL is one JSON object a line: {"key": "...", "threshold": 0.7}, the
	// threshold optional (null or absent means the batch's); other fields are ignored.
	ManifestJSONL
)

// String returns "auto", "csv" or "jsonl".
func (f ManifestFormat) String() string {
	switch f {
	case ManifestAuto:
		return "auto"
	case ManifestCSV:
		return "csv"
	case ManifestJSONL:
		return "jsonl"
	}
	return fmt.Sprintf("ManifestFormat(%d)", int(f))
}

// ParseManifestFormat returns the format named "auto" (or ""), "csv" or "jsonl".
func ParseManifestFormat(s string) (ManifestFormat, error) {
	switch strings.ToLower(s) {
	case "", "auto":
		return ManifestAuto, nil
	case "csv":
		return ManifestCSV, nil
	case "jsonl", "ndjson":
		return ManifestJSONL, nil
	}
	return 0, fmt.Errorf("%w: unknown manifest format %q (want auto, csv or jsonl)", ErrBadManifest, s)
}

// Manifest returns a Source reading a manifest of keys with optional per-row thresholds
// from r, in the given format (see ManifestFormat). A UTF-8 byte order mark is skipped and
// blank lines are ignored. A malformed row (bad JSON or CSV quoting, a missing key, a
// threshold that is not a number in [0, 1]) is a *RowError with its line number, and the
// rows after it still come. A CSV header without a "key" column, an unknown format or a
// read error from r is fatal. The source can be ranged over once.
func Manifest(r io.Reader, format ManifestFormat) Source {
	return func(yield func(Item, error) bool) {
		br := bufio.NewReaderSize(r, 64<<10)
		skipped, first, err := skipLeadingBlank(br)
		if err == io.EOF {
			return // an empty manifest
		}
		if err != nil {
			yield(Item{}, fmt.Errorf("read manifest: %w", err))
			return
		}
		if format == ManifestAuto {
			format = ManifestCSV
			if first == '{' {
				format = ManifestJSONL
			}
		}
		switch format {
		case ManifestCSV:
			readCSV(br, skipped, yield)
		case ManifestJSONL:
			readJSONL(br, skipped, yield)
		default:
			yield(Item{}, fmt.Errorf("%w: unknown manifest format %v", ErrBadManifest, format))
		}
	}
}

// skipLeadingBlank consumes a byte order mark and white space before the first other
// byte, which it leaves unread and returns with the number of lines consumed.
func skipLeadingBlank(br *bufio.Reader) (lines int, first byte, err error) {
	if b, err := br.Peek(3); err == nil && bytes.Equal(b, []byte("\xef\xbb\xbf")) {
		br.Discard(3)
	}
	for {
		c, err := br.ReadByte()
		if err != nil {
			return lines, 0, err
		}
		switch c {
		case '\n':
			lines++
		case ' ', '\t', '\r', '\v', '\f':
		default:
			br.UnreadByte()
			return lines, c, nil
		}
	}
}

// readCSV yields the rows of a CSV manifest; lineOffset lines were consumed before r.
func readCSV(r io.Reader, lineOffset int, yield func(Item, error) bool) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	line := func() int { l, _ := cr.FieldPos(0); return l + lineOffset }

	keyCol, thrCol := -1, -1
	header, err := cr.Read()
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			err = fmt.Errorf("%w: line %d: header: %v", ErrBadManifest, pe.StartLine+lineOffset, pe.Err)
		} else {
			err = fmt.Errorf("read manifest: %w", err)
		}
		yield(Item{}, err)
		return
	}
	for i, name := range header {
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "key":
			if keyCol < 0 {
				keyCol = i
			}
		case "threshold":
			if thrCol < 0 {
				thrCol = i
			}
		}
	}
	if keyCol < 0 {
		yield(Item{}, fmt.Errorf(`%w: line %d: the CSV header has no "key" column`, ErrBadManifest, line()))
		return
	}

	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return
		}
		if err != nil {
			var pe *csv.ParseError
			if !errors.As(err, &pe) {
				yield(Item{}, fmt.Errorf("read manifest: %w", err))
				return
			}
			if !yield(Item{}, &RowError{Line: pe.StartLine + lineOffset, Err: pe.Err}) {
				return
			}
			continue
		}
		n := line()
		cell := func(i int) string {
			if i >= 0 && i < len(rec) {
				return rec[i]
			}
			return ""
		}
		if allBlank(rec) {
			continue
		}
		it, rerr := makeItem(n, cell(keyCol), strings.TrimSpace(cell(thrCol)))
		if !yield(it, rerr) {
			return
		}
	}
}

// makeItem builds the item of a CSV row, or its row error.
func makeItem(line int, key, threshold string) (Item, error) {
	if key == "" {
		return Item{}, &RowError{Line: line, Err: errors.New("missing key")}
	}
	it := Item{Key: key, Line: line}
	if threshold != "" {
		t, err := strconv.ParseFloat(threshold, 64)
		if err != nil {
			return Item{}, &RowError{Line: line, Key: key, Err: fmt.Errorf("%w, got %q", ErrBadThreshold, threshold)}
		}
		if err := ValidateThreshold(t); err != nil {
			return Item{}, &RowError{Line: line, Key: key, Err: err}
		}
		it.Threshold = &t
	}
	return it, nil
}

// jsonlRow is one line of a JSONL manifest.
type jsonlRow struct {
	Key       *string         `json:"key"`
	Threshold json.RawMessage `json:"threshold"`
}

// readJSONL yields the rows of a JSONL manifest; lineOffset lines were consumed before r.
func readJSONL(r io.Reader, lineOffset int, yield func(Item, error) bool) {
	lr := newLineReader(r, lineOffset)
	for {
		line, n, tooLong, err := lr.next()
		if err == io.EOF {
			return
		}
		if err != nil {
			yield(Item{}, fmt.Errorf("read manifest: %w", err))
			return
		}
		if !tooLong && isBlank(line) {
			continue
		}
		if !yield(parseJSONLRow(line, n, tooLong)) {
			return
		}
	}
}

// parseJSONLRow parses one non-blank JSONL line.
func parseJSONLRow(line []byte, n int, tooLong bool) (Item, error) {
	if tooLong {
		return Item{}, &RowError{Line: n, Err: fmt.Errorf("line longer than %d bytes", maxLine)}
	}
	var row jsonlRow
	if err := json.Unmarshal(line, &row); err != nil {
		return Item{}, &RowError{Line: n, Err: fmt.Errorf("bad JSON: %v", err)}
	}
	if row.Key == nil || *row.Key == "" {
		return Item{}, &RowError{Line: n, Err: errors.New("missing key")}
	}
	it := Item{Key: *row.Key, Line: n}
	if len(row.Threshold) > 0 && string(row.Threshold) != "null" {
		var t float64
		if err := json.Unmarshal(row.Threshold, &t); err != nil {
			return Item{}, &RowError{Line: n, Key: it.Key, Err: fmt.Errorf("%w, got %s", ErrBadThreshold, row.Threshold)}
		}
		if err := ValidateThreshold(t); err != nil {
			return Item{}, &RowError{Line: n, Key: it.Key, Err: err}
		}
		it.Threshold = &t
	}
	return it, nil
}

// lineReader reads lines of bounded length, counting them.
type lineReader struct {
	br    *bufio.Reader
	n     int
	buf   []byte
	done  bool
	first bool
}

func newLineReader(r io.Reader, lineOffset int) *lineReader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	return &lineReader{br: br, n: lineOffset, first: lineOffset == 0}
}

// next returns the next line without its "\n" or "\r\n" (and, on line 1, without a
// UTF-8 byte order mark) and its number; tooLong (and no line) when it was longer than
// maxLine; io.EOF at the end. The line is valid until the next call.
func (l *lineReader) next() (line []byte, n int, tooLong bool, err error) {
	if l.done {
		return nil, l.n, false, io.EOF
	}
	l.buf = l.buf[:0]
	for {
		chunk, err := l.br.ReadSlice('\n')
		if !tooLong {
			if len(l.buf)+len(chunk) > maxLine+2 { // +2: room for "\r\n"
				tooLong = true
				l.buf = l.buf[:0]
			} else {
				l.buf = append(l.buf, chunk...)
			}
		}
		switch err {
		case nil:
		case bufio.ErrBufferFull:
			continue
		case io.EOF:
			l.done = true
			if len(l.buf) == 0 && !tooLong {
				return nil, l.n, false, io.EOF
			}
		default:
			return nil, l.n, false, err
		}
		l.n++
		if tooLong {
			return nil, l.n, true, nil
		}
		line = bytes.TrimSuffix(l.buf, []byte("\n"))
		line = bytes.TrimSuffix(line, []byte("\r"))
		if l.first {
			l.first = false
			line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf"))
		}
		return line, l.n, false, nil
	}
}

// isBlank reports whether b holds only ASCII white space.
func isBlank(b []byte) bool {
	return len(bytes.Trim(b, " \t\r\v\f")) == 0
}

// allBlank reports whether every cell of a CSV record is white space.
func allBlank(rec []string) bool {
	for _, c := range rec {
		if strings.TrimSpace(c) != "" {
			return false
		}
	}
	return true
}
