package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/results"
	"github.com/livenessq/livenessq/storage"
)

func init() {
	register(&command{name: "enqueue", summary: "enqueue keys: arguments, --keys-file, --manifest or --prefix", run: runEnqueue})
}

// shownRowErrors is how many malformed rows a summary lists.
const shownRowErrors = 5

// sourceFlags choose what to enqueue: keys given as arguments, a keys file, a manifest
// or a storage prefix. They are shared by `enqueue` and `run`.
type sourceFlags struct {
	keysFile       string
	manifest       string
	manifestFormat string
	prefix         optionalString
}

func (s *sourceFlags) register(fs *flagSet) {
	fs.StringVar(&s.keysFile, "keys-file", "", "file of keys, one a line ('-' for stdin)")
	fs.bindEnv("keys-file", "LIVENESSQ_KEYS_FILE")
	fs.StringVar(&s.manifest, "manifest", "", "manifest file ('-' for stdin): CSV with a header naming key and optionally threshold, or JSONL {\"key\":…,\"threshold\":…}")
	fs.bindEnv("manifest", "LIVENESSQ_MANIFEST")
	fs.StringVar(&s.manifestFormat, "manifest-format", "auto", "manifest format: auto, csv, jsonl")
	fs.bindEnv("manifest-format", "LIVENESSQ_MANIFEST_FORMAT")
	fs.Var(&s.prefix, "prefix", "list the storage under this key prefix and enqueue every object (--prefix '' for all); results written to the same storage are skipped")
	fs.bindEnv("prefix", "LIVENESSQ_PREFIX")
}

// openedSource is a Source and what to say about it.
type openedSource struct {
	src     enqueue.Source
	desc    string // for the batch record: "prefix selfies/", "manifest keys.csv"
	listing bool   // a storage listing (progress is worth showing)
	close   func()
}

// open returns the Source the flags and keys name. With none of them, defaultPrefix
// (when true) lists the whole storage; otherwise it is a usage error. skip lists key
// prefixes a listing leaves out (the results).
func (s *sourceFlags) open(ctx context.Context, env *environ, keys []string, bucket *storage.Bucket, skip []string, defaultPrefix bool) (*openedSource, error) {
	n := 0
	for _, set := range []bool{len(keys) > 0, s.keysFile != "", s.manifest != "", s.prefix.set} {
		if set {
			n++
		}
	}
	switch {
	case n > 1:
		return nil, usagef("give exactly one source: keys as arguments, --keys-file, --manifest or --prefix")
	case n == 0 && !defaultPrefix:
		return nil, usagef("nothing to enqueue: give keys as arguments, --keys-file, --manifest or --prefix")
	}
	format, err := enqueue.ParseManifestFormat(s.manifestFormat)
	if err != nil {
		return nil, usagef("--manifest-format: %q is not one of auto, csv, jsonl", s.manifestFormat)
	}
	nop := func() {}
	switch {
	case len(keys) > 0:
		return &openedSource{src: enqueue.Keys(keys...), desc: fmt.Sprintf("%d keys", len(keys)), close: nop}, nil
	case s.keysFile != "":
		r, closeFn, err := openInput(env, s.keysFile, "--keys-file")
		if err != nil {
			return nil, err
		}
		return &openedSource{src: enqueue.KeysReader(r), desc: "keys file " + s.keysFile, close: closeFn}, nil
	case s.manifest != "":
		r, closeFn, err := openInput(env, s.manifest, "--manifest")
		if err != nil {
			return nil, err
		}
		return &openedSource{src: enqueue.Manifest(r, format), desc: "manifest " + s.manifest, close: closeFn}, nil
	default:
		p := s.prefix.value
		desc := "prefix " + p
		if p == "" {
			desc = "all objects"
		}
		return &openedSource{src: enqueue.Prefix(ctx, bucket, p, skip...), desc: desc, listing: true, close: nop}, nil
	}
}

// openInput opens a file named by flag, or stdin for "-".
func openInput(env *environ, name, flag string) (io.Reader, func(), error) {
	if name == "-" {
		return env.stdin, func() {}, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, usagef("%s: %v", flag, err)
	}
	return f, func() { f.Close() }, nil
}

// resultsSkip returns the key prefixes, relative to src, under which results are
// written: a listing of src must leave them out. explicit says --results was given.
func resultsSkip(src, res *storage.Bucket, explicit bool) []string {
	if !explicit {
		return []string{DefaultResultsPrefix}
	}
	su, err1 := url.Parse(src.URL())
	ru, err2 := url.Parse(res.URL())
	if err1 != nil || err2 != nil || su.Scheme != ru.Scheme || su.Host != ru.Host || su.RawQuery != ru.RawQuery {
		return nil
	}
	base := strings.TrimSuffix(su.Path, "/") + "/"
	rp := strings.TrimSuffix(ru.Path, "/") + "/"
	if !strings.HasPrefix(rp, base) || rp == base {
		return nil
	}
	return []string{strings.TrimPrefix(rp, base)}
}

// optionalString is a string flag that records whether it was given, so that
// `--prefix ”` (everything) differs from no --prefix.
type optionalString struct {
	value string
	set   bool
}

func (o *optionalString) String() string { return o.value }

func (o *optionalString) Set(s string) error { o.value, o.set = s, true; return nil }

// enqueueReport is the summary `enqueue --json` prints.
type enqueueReport struct {
	BatchID    string          `json:"batch_id"`
	Created    bool            `json:"created"`
	Source     string          `json:"source"`
	Storage    string          `json:"storage"`
	Enqueued   int64           `json:"enqueued"`
	Duplicates int64           `json:"duplicates"`
	Malformed  int64           `json:"malformed"`
	Errors     []rowErrorJSON  `json:"errors"`
	Finished   bool            `json:"finished"`
	Completed  bool            `json:"completed"`
	Seconds    float64         `json:"duration_seconds"`
	Error      string          `json:"error,omitempty"`
	summary    enqueue.Summary `json:"-"`
}

type rowErrorJSON struct {
	Line  int    `json:"line"`
	Key   string `json:"key,omitempty"`
	Error string `json:"error"`
}

func newEnqueueReport(s enqueue.Summary, src *openedSource, storageURL string, runErr error) enqueueReport {
	r := enqueueReport{BatchID: s.BatchID, Created: s.Created, Source: src.desc, Storage: storageURL,
		Enqueued: s.Enqueued, Duplicates: s.Duplicates, Malformed: s.Malformed, Errors: []rowErrorJSON{},
		Finished: s.Finished, Completed: s.Completed, Seconds: s.Duration.Seconds(), summary: s}
	for _, e := range s.Errors {
		msg := e.Err.Error()
		r.Errors = append(r.Errors, rowErrorJSON{Line: e.Line, Key: e.Key, Error: msg})
	}
	if runErr != nil {
		r.Error = runErr.Error()
	}
	return r
}

// writeText prints the summary for people.
func (r enqueueReport) writeText(w io.Writer) {
	fmt.Fprintf(w, "batch          %s\n", r.BatchID)
	fmt.Fprintf(w, "source         %s\n", r.Source)
	fmt.Fprintf(w, "enqueued       %d\n", r.Enqueued)
	fmt.Fprintf(w, "already there  %d\n", r.Duplicates)
	fmt.Fprintf(w, "malformed      %d\n", r.Malformed)
	for i, e := range r.summary.Errors {
		if i == shownRowErrors {
			fmt.Fprintf(w, "  … and %d more\n", r.Malformed-int64(shownRowErrors))
			break
		}
		fmt.Fprintf(w, "  %v\n", &e)
	}
	if !r.Finished {
		fmt.Fprintln(w, "stopped early: run the same command with --batch "+r.BatchID+" to resume")
	}
	fmt.Fprintf(w, "follow it with: livenessq status --batch %s\n", r.BatchID)
}

// enqueueProgressLine renders an enqueue's progress.
func enqueueProgressLine(p enqueue.Progress, listing bool) string {
	verb := "read"
	if listing {
		verb = "listed"
	}
	rate := 0.0
	if p.Elapsed > 0 {
		rate = float64(p.Read) / p.Elapsed.Seconds()
	}
	return fmt.Sprintf("enqueue %s: %s %d, enqueued %d, already there %d, malformed %d  (%.0f/s, %s)",
		p.BatchID, verb, p.Read, p.Enqueued, p.Duplicates, p.Malformed, rate, p.Elapsed.Round(time.Second))
}

// batchFlags are the batch's settings, shared by `enqueue` and `run`.
type batchFlags struct {
	id          string
	threshold   float64
	callbackURL string
	maxAttempts int
}

func (b *batchFlags) register(fs *flagSet, withWorker bool) {
	fs.StringVar(&b.id, "batch", "", "batch id; default a new one (re-use an id to resume an interrupted enqueue)")
	fs.bindEnv("batch", "LIVENESSQ_BATCH")
	if !withWorker { // `run` shares the worker's --threshold and --max-attempts
		fs.Float64Var(&b.threshold, "threshold", enqueue.DefaultThreshold, "liveness threshold in (0, 1] for rows that give none")
		fs.bindEnv("threshold", "LIVENESSQ_THRESHOLD")
		fs.IntVar(&b.maxAttempts, "max-attempts", 10, "attempts a task gets before it is archived as failed (at least 2)")
		fs.bindEnv("max-attempts", "LIVENESSQ_MAX_ATTEMPTS")
		// Callbacks are delivered by `serve` and `worker` processes (with
		// LIVENESSQ_WEBHOOK_SECRET); `run` ends with its batch, so it offers none.
		fs.StringVar(&b.callbackURL, "callback-url", "", "URL that receives the batch's completion callback (delivered by `serve` or `worker` processes that have LIVENESSQ_WEBHOOK_SECRET)")
		fs.bindEnv("callback-url", "LIVENESSQ_CALLBACK_URL")
	}
}

func (b *batchFlags) validate() error {
	if b.id != "" {
		if err := results.ValidateBatchID(b.id); err != nil {
			return usagef("--batch: %q: 1..128 characters among letters, digits and . _ - :", b.id)
		}
	}
	if err := checkThreshold(b.threshold); err != nil {
		return err
	}
	if b.maxAttempts < 2 {
		// asynq's MaxRetry 0 would mean "the default" to the enqueue client.
		return usagef("--max-attempts: must be at least 2, got %d", b.maxAttempts)
	}
	if b.callbackURL != "" {
		u, err := url.Parse(b.callbackURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return usagef("--callback-url: must be an absolute http or https URL")
		}
	}
	return nil
}

func runEnqueue(ctx context.Context, env *environ, args []string) error {
	var c common
	var sf sourceFlags
	var bf batchFlags
	var asJSON bool
	var inFlight int
	fs := newFlagSet(env, "enqueue", "[flags] [KEY ...]")
	c.registerConnection(fs)
	sf.register(fs)
	bf.register(fs, false)
	fs.IntVar(&inFlight, "in-flight", enqueue.DefaultInFlight, "enqueues in flight at once")
	fs.bindEnv("in-flight", "LIVENESSQ_ENQUEUE_IN_FLIGHT")
	fs.BoolVar(&asJSON, "json", false, "print the summary as JSON")
	fs.bindEnv("json", "LIVENESSQ_JSON")
	c.registerLogging(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := bf.validate(); err != nil {
		return err
	}
	if inFlight < 1 {
		return usagef("--in-flight: must be at least 1, got %d", inFlight)
	}
	logger, err := c.logger(env.stderr)
	if err != nil {
		return err
	}
	src, res, err := openStorage(ctx, c.storageURL, c.resultsURL)
	if err != nil {
		return err
	}
	defer src.Close()
	defer res.Close()
	opened, err := sf.open(ctx, env, fs.Args(), src, resultsSkip(src, res, c.resultsURL != ""), false)
	if err != nil {
		return err
	}
	defer opened.close()
	rdb, err := openRedis(ctx, c.redisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	store, err := newResults(rdb, res, logger)
	if err != nil {
		return err
	}
	client, err := enqueue.New(enqueue.Config{Redis: rdb, Batches: store, Queue: c.queue,
		MaxRetry: bf.maxAttempts - 1, InFlight: inFlight, Logger: logger})
	if err != nil {
		return usagef("enqueue: %v", err)
	}
	defer client.Close()

	prog := newProgress(env.stderr, 5*time.Second)
	summary, runErr := client.Enqueue(ctx, enqueue.Batch{ID: bf.id, Storage: src.URL(), Source: opened.desc,
		Threshold: bf.threshold, CallbackURL: bf.callbackURL}, opened.src, func(p enqueue.Progress) {
		if p.Elapsed >= time.Second {
			prog.update(enqueueProgressLine(p, opened.listing))
		}
	})
	prog.finish("")
	report := newEnqueueReport(summary, opened, src.URL(), runErr)
	if asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return err
		}
	} else {
		report.writeText(env.stdout)
	}
	if runErr != nil {
		if errors.Is(runErr, enqueue.ErrBadManifest) {
			return usagef("--manifest: %v", runErr)
		}
		return fmt.Errorf("enqueue: %w", runErr)
	}
	return nil
}
