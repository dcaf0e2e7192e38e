package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/livenessq/livenessq/results"
	"github.com/livenessq/livenessq/storage"
)

func init() {
	register(&command{
		name:    "results",
		summary: "read results: get KEY (the record JSON), export --batch ID --format jsonl|csv",
		run:     runResults,
	})
}

const resultsUsage = `get KEY [flags]
       livenessq results export --batch ID [--format jsonl|csv] [--output FILE] [flags]

  get KEY     prints the latest result of object KEY as JSON (from Redis, or from the
              result JSON in storage when --storage is given and Redis has none);
              exit status 1 when there is none.
  export      streams every result of a batch, one JSON record a line (jsonl) or as CSV
              with a header row, to --output or standard output.`

func runResults(ctx context.Context, env *environ, args []string) error {
	if len(args) == 0 {
		return usagef("results: a subcommand is required: get KEY, or export --batch ID")
	}
	switch args[0] {
	case "get":
		return runResultsGet(ctx, env, args[1:])
	case "export":
		return runResultsExport(ctx, env, args[1:])
	case "-h", "-help", "--help", "help":
		// Both subcommands' flags, so that `results --help` lists every variable it reads.
		fs := resultsFlagSet(env, &resultsFlags{})
		fs.Usage()
		return flag.ErrHelp
	default:
		return usagef("results: unknown subcommand %q: use get KEY, or export --batch ID", args[0])
	}
}

// resultsFlags are the flags of `livenessq results get|export`.
type resultsFlags struct {
	common
	batch  string
	format string
	output string
}

func resultsFlagSet(env *environ, f *resultsFlags) *flagSet {
	fs := newFlagSet(env, "results", resultsUsage)
	f.registerConnection(fs)
	fs.StringVar(&f.batch, "batch", "", "export: the batch whose results to export (required)")
	fs.bindEnv("batch", "LIVENESSQ_BATCH")
	fs.StringVar(&f.format, "format", "jsonl", "export: jsonl (one record JSON a line) or csv")
	fs.bindEnv("format", "LIVENESSQ_EXPORT_FORMAT")
	fs.StringVar(&f.output, "output", "", "export: file to write (default standard output)")
	fs.bindEnv("output", "LIVENESSQ_EXPORT_OUTPUT")
	return fs
}

func runResultsGet(ctx context.Context, env *environ, args []string) error {
	var f resultsFlags
	fs := resultsFlagSet(env, &f)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("results get: exactly one KEY is required, got %d arguments", len(pos))
	}
	key := pos[0]
	rdb, err := openRedis(ctx, f.redisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	var store *results.Store
	searched := "Redis"
	if f.storageURL != "" {
		src, res, err := openStorage(ctx, f.storageURL, f.resultsURL)
		if err != nil {
			return err
		}
		defer src.Close()
		defer res.Close()
		if store, err = newResults(rdb, res, zerolog.Nop()); err != nil {
			return err
		}
		searched = "Redis or " + res.URL()
	} else {
		var done func()
		if store, done, err = redisOnlyResults(rdb); err != nil {
			return err
		}
		defer done()
		searched = "Redis (give --storage to look in the result JSON too)"
	}
	rec, err := store.Get(ctx, key)
	if errors.Is(err, results.ErrNotFound) {
		return fmt.Errorf("no result for key %q in %s", key, searched)
	}
	if err != nil {
		return fmt.Errorf("get the result of %q: %w", key, err)
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(env.stdout, "%s\n", b)
	return err
}

func runResultsExport(ctx context.Context, env *environ, args []string) error {
	var f resultsFlags
	fs := resultsFlagSet(env, &f)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("results export: unexpected argument %q (the batch goes in --batch)", pos[0])
	}
	if f.batch == "" {
		return usagef("--batch: the batch to export is required")
	}
	if err := results.ValidateBatchID(f.batch); err != nil {
		return usagef("--batch: %v", err)
	}
	format, err := results.ParseFormat(f.format)
	if err != nil {
		return usagef("--format: %q is not one of jsonl, csv", f.format)
	}
	rdb, err := openRedis(ctx, f.redisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	store, done, err := redisOnlyResults(rdb)
	if err != nil {
		return err
	}
	defer done()

	if f.output == "" || f.output == "-" {
		bw := bufio.NewWriterSize(env.stdout, 64<<10)
		n, err := store.Export(ctx, f.batch, format, bw)
		if err == nil {
			err = bw.Flush()
		}
		if err != nil {
			return exportError(f.batch, err)
		}
		fmt.Fprintf(env.stderr, "exported %d results of batch %s\n", n, f.batch)
		return nil
	}
	// Written next to the target and renamed at the end: a failed export leaves no
	// half file behind, and an existing file is replaced only by a whole one.
	tmp, err := os.CreateTemp(filepath.Dir(f.output), "."+filepath.Base(f.output)+".*")
	if err != nil {
		return fmt.Errorf("--output: %w", err)
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriterSize(tmp, 64<<10)
	n, err := store.Export(ctx, f.batch, format, bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = tmp.Close()
	} else {
		tmp.Close()
	}
	if err != nil {
		return exportError(f.batch, err)
	}
	if err := os.Rename(tmp.Name(), f.output); err != nil {
		return fmt.Errorf("--output: %w", err)
	}
	fmt.Fprintf(env.stderr, "exported %d results of batch %s to %s\n", n, f.batch, f.output)
	return nil
}

func exportError(batch string, err error) error {
	if errors.Is(err, results.ErrBatchNotFound) {
		return fmt.Errorf("batch %q not found: never created, or expired after its retention", batch)
	}
	return fmt.Errorf("export batch %q: %w", batch, err)
}

// redisOnlyResults returns a results Store for reading batches and results from Redis
// alone (status, export, get without --storage). The Store requires a bucket: it gets an
// empty directory of its own, removed by done, so that nothing is ever read from or
// written to a place the operator did not name.
func redisOnlyResults(rdb redis.UniversalClient) (store *results.Store, done func(), err error) {
	dir, err := os.MkdirTemp("", "livenessq-results-")
	if err != nil {
		return nil, nil, err
	}
	b, err := storage.NewLocal(storage.LocalConfig{Root: dir})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	done = func() { b.Close(); os.RemoveAll(dir) }
	store, err = newResults(rdb, b, zerolog.Nop())
	if err != nil {
		done()
		return nil, nil, err
	}
	return store, done, nil
}

// parseInterspersed parses args with fs, allowing flags after positional arguments
// ("results get KEY --redis URL"), and returns the positional arguments. "--" ends the
// flags.
func parseInterspersed(fs *flagSet, args []string) ([]string, error) {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		fl := fs.Lookup(name)
		if fl == nil {
			continue // the parser reports it
		}
		if bf, ok := fl.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	if err := fs.parse(flags); err != nil {
		return nil, err
	}
	return pos, nil
}

// writeJSONLine writes v as one line of JSON.
func writeJSONLine(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
