package results

import (
	"bufio"
	"context"
	"encoding/csv"
	"fmt"
	"hash/maphash"
	"io"
	"strconv"
	"strings"
	"time"
)

// Format is an export format.
type Format string

// The export formats.
const (
	// FormatJSONL writes one record JSON per line, exactly as stored.
	FormatJSONL Format = "jsonl"
	// FormatCSV writes a header row (CSVHeader) then one row per record.
	FormatCSV Format = "csv"
)

// ParseFormat returns the Format named s ("jsonl" or "ndjson", "csv"; any case), or an
// error wrapping ErrInvalidFormat.
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "jsonl", "ndjson":
		return FormatJSONL, nil
	case "csv":
		return FormatCSV, nil
	}
	return "", fmt.Errorf("%w %q: want jsonl or csv", ErrInvalidFormat, s)
}

// CSVHeader is the header row of a CSV export: the record flattened. Empty cells stand
// for absent values (no score, no previous result, ...).
var CSVHeader = []string{
	"key", "bucket", "etag", "batch_id", "status", "score", "threshold", "live", "faces",
	"format", "width", "height", "bytes", "low_resolution", "reason", "api_req_uid",
	"request_id", "attempts", "verified_at", "previous_status", "previous_score",
}

// exportScanCount is the COUNT hint of each HSCAN of an export.
const exportScanCount = 500

// Export writes every result of batch id to w in format and returns how many it wrote.
// It streams: the batch is read from Redis a few hundred results at a time, and only a
// 64-bit hash of each key written is kept (to drop the duplicates HSCAN may return while
// the batch is being written to). Order is unspecified. Results written while the export
// runs may or may not be included. It returns an error wrapping ErrBatchNotFound when
// Redis holds nothing for the batch.
func (s *Store) Export(ctx context.Context, id string, format Format, w io.Writer) (n int, err error) {
	if err := ValidateBatchID(id); err != nil {
		return 0, err
	}
	if format != FormatJSONL && format != FormatCSV {
		return 0, fmt.Errorf("%w %q", ErrInvalidFormat, format)
	}
	exists, err := s.rdb.Exists(ctx, BatchMetaKey(id), BatchResultsKey(id)).Result()
	if err != nil {
		return 0, fmt.Errorf("export batch %s: %w", id, err)
	}
	if exists == 0 {
		return 0, fmt.Errorf("export batch %s: %w", id, ErrBatchNotFound)
	}

	bw := bufio.NewWriterSize(w, 64<<10)
	var cw *csv.Writer
	if format == FormatCSV {
		cw = csv.NewWriter(bw)
		if err := cw.Write(CSVHeader); err != nil {
			return 0, fmt.Errorf("export batch %s: %w", id, err)
		}
	}
	seed := maphash.MakeSeed()
	seen := make(map[uint64]struct{})
	row := make([]string, len(CSVHeader))

	key := BatchResultsKey(id)
	var cursor uint64
	for {
		kvs, next, err := s.rdb.HScan(ctx, key, cursor, "", exportScanCount).Result()
		if err != nil {
			return n, fmt.Errorf("export batch %s: %w", id, err)
		}
		for i := 0; i+1 < len(kvs); i += 2 {
			h := maphash.String(seed, kvs[i])
			if _, dup := seen[h]; dup {
				continue
			}
			seen[h] = struct{}{}
			if cw != nil {
				rec, err := UnmarshalRecord([]byte(kvs[i+1]))
				if err != nil {
					return n, fmt.Errorf("export batch %s: key %q: %w", id, kvs[i], err)
				}
				csvRow(rec, row)
				if err := cw.Write(row); err != nil {
					return n, fmt.Errorf("export batch %s: %w", id, err)
				}
			} else {
				bw.WriteString(kvs[i+1])
				if err := bw.WriteByte('\n'); err != nil {
					return n, fmt.Errorf("export batch %s: %w", id, err)
				}
			}
			n++
		}
		if next == 0 {
			break
		}
		cursor = next
		if err := ctx.Err(); err != nil {
			return n, err
		}
	}
	if cw != nil {
		if cw.Flush(); cw.Error() != nil {
			return n, fmt.Errorf("export batch %s: %w", id, cw.Error())
		}
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("export batch %s: %w", id, err)
	}
	return n, nil
}

// csvRow fills row (len(CSVHeader)) with rec's flat columns.
func csvRow(rec *Record, row []string) {
	clear(row)
	row[0] = rec.Key
	row[1] = rec.Bucket
	row[2] = rec.ETag
	row[3] = rec.BatchID
	row[4] = string(rec.Status)
	row[5] = formatScore(rec.Score)
	row[6] = strconv.FormatFloat(rec.Threshold, 'f', -1, 64)
	if rec.Live != nil {
		row[7] = strconv.FormatBool(*rec.Live)
	}
	row[8] = strconv.Itoa(rec.Faces)
	if im := rec.Image; im != nil {
		row[9] = im.Format
		row[10] = strconv.Itoa(im.Width)
		row[11] = strconv.Itoa(im.Height)
		row[12] = strconv.FormatInt(im.Bytes, 10)
	}
	row[13] = strconv.FormatBool(rec.LowResolution)
	row[14] = rec.Reason
	if k := rec.Kairos; k != nil {
		row[15] = k.APIReqUID
		row[16] = k.RequestID
	}
	row[17] = strconv.Itoa(rec.Attempts)
	row[18] = rec.VerifiedAt.UTC().Format(time.RFC3339Nano)
	if p := rec.Previous; p != nil {
		row[19] = string(p.Status)
		row[20] = formatScore(p.Score)
	}
}

// formatScore writes a score in the shortest form that reads back exactly; "" for none.
func formatScore(s *float64) string {
	if s == nil {
		return ""
	}
	return strconv.FormatFloat(*s, 'f', -1, 64)
}
