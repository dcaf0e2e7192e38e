package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"golang.org/x/term"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/kairos"
	"github.com/livenessq/livenessq/results"
	"github.com/livenessq/livenessq/storage"
)

// DefaultResultsPrefix is where results go under the storage root when
// LIVENESSQ_RESULTS_URL is not set.
const DefaultResultsPrefix = "results/"

// common holds the flags most commands share: where Redis, storage and results are, the
// queue, and logging.
type common struct {
	redisURL   string
	storageURL string
	resultsURL string
	queue      string
	logLevel   string
	logFormat  string
}

// registerConnection adds --redis, --storage, --results and --queue.
func (c *common) registerConnection(fs *flagSet) {
	fs.StringVar(&c.redisURL, "redis", "", "Redis URL: redis://[user:pass@]host:port[/db], rediss:// (TLS), redis+sentinel://host:port?master_name=NAME&addr=host2:port, redis+cluster://host:port?addr=host2:port")
	fs.bindEnv("redis", "LIVENESSQ_REDIS_URL")
	fs.StringVar(&c.storageURL, "storage", "", "storage URL: s3://bucket[/prefix]?endpoint=…&region=…&path_style=true, a directory, or file:///dir")
	fs.bindEnv("storage", "LIVENESSQ_STORAGE_URL")
	fs.StringVar(&c.resultsURL, "results", "", "where result JSON goes (a storage URL); default results/ under the storage root")
	fs.bindEnv("results", "LIVENESSQ_RESULTS_URL")
	fs.StringVar(&c.queue, "queue", enqueue.DefaultQueue, "asynq queue name")
	fs.bindEnv("queue", "LIVENESSQ_QUEUE")
}

// registerLogging adds --log-level and --log-format.
func (c *common) registerLogging(fs *flagSet) {
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.bindEnv("log-level", "LIVENESSQ_LOG_LEVEL")
	fs.StringVar(&c.logFormat, "log-format", "auto", "log format: json, console, or auto (console on a terminal)")
	fs.bindEnv("log-format", "LIVENESSQ_LOG_FORMAT")
}

// logger builds the zerolog logger the flags ask for, writing to w.
func (c *common) logger(w io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(c.logLevel))
	if err != nil || c.logLevel == "" {
		return zerolog.Nop(), usagef("--log-level: %q is not one of debug, info, warn, error", c.logLevel)
	}
	switch c.logFormat {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	case "auto", "":
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
		}
	default:
		return zerolog.Nop(), usagef("--log-format: %q is not one of json, console, auto", c.logFormat)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// resp2 makes a protocol left unset by the URL RESP2 (see openRedis).
func resp2(protocol *int) {
	if *protocol == 0 {
		*protocol = 2
	}
}

// openRedis connects to the Redis that rawURL names and checks that it answers.
func openRedis(ctx context.Context, rawURL string) (redis.UniversalClient, error) {
	if rawURL == "" {
		return nil, usagef("--redis: a Redis URL is required (or set LIVENESSQ_REDIS_URL)")
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, usagef("--redis: %v", redactURLError(err))
	}
	// Clients speak RESP2 unless the URL asks for another protocol (?protocol=3):
	// livenessq uses no RESP3 feature, and go-redis's RESP3 client checks for push
	// notifications around every reply (5% of a worker's CPU, BENCHMARKS.md).
	var rdb redis.UniversalClient
	switch u.Scheme {
	case "redis", "rediss", "unix":
		opt, perr := redis.ParseURL(rawURL)
		if perr != nil {
			return nil, usagef("--redis: %v", perr)
		}
		resp2(&opt.Protocol)
		rdb = redis.NewClient(opt)
	case "redis+sentinel", "rediss+sentinel":
		opt, perr := redis.ParseFailoverURL(strings.Replace(rawURL, "+sentinel", "", 1))
		if perr != nil {
			return nil, usagef("--redis: %v", perr)
		}
		if opt.MasterName == "" {
			return nil, usagef("--redis: a sentinel URL needs ?master_name=NAME")
		}
		resp2(&opt.Protocol)
		rdb = redis.NewFailoverClient(opt)
	case "redis+cluster", "rediss+cluster":
		opt, perr := redis.ParseClusterURL(strings.Replace(rawURL, "+cluster", "", 1))
		if perr != nil {
			return nil, usagef("--redis: %v", perr)
		}
		resp2(&opt.Protocol)
		rdb = redis.NewClusterClient(opt)
	default:
		return nil, usagef("--redis: scheme %q is not one of redis, rediss, redis+sentinel, redis+cluster", u.Scheme)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("connect to Redis at %s: %w", u.Redacted(), err)
	}
	return rdb, nil
}

// redactURLError keeps a password in a URL out of an error message.
func redactURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		if u, perr := url.Parse(ue.URL); perr == nil {
			ue.URL = u.Redacted()
		} else {
			ue.URL = "(url)"
		}
		return ue
	}
	return err
}

// openStorage opens the selfie storage and the results location (results/ under the
// storage root unless resultsURL names another).
func openStorage(ctx context.Context, storageURL, resultsURL string) (src, res *storage.Bucket, err error) {
	if storageURL == "" {
		return nil, nil, usagef("--storage: a storage URL or directory is required (or set LIVENESSQ_STORAGE_URL)")
	}
	src, err = storage.OpenURL(ctx, storageURL)
	if err != nil {
		return nil, nil, usagef("--storage: %v", err)
	}
	if resultsURL == "" {
		return src, src.Sub(DefaultResultsPrefix), nil
	}
	res, err = storage.OpenURL(ctx, resultsURL)
	if err != nil {
		src.Close()
		return nil, nil, usagef("--results: %v", err)
	}
	return src, res, nil
}

// kairosFlags are the API client's settings.
type kairosFlags struct {
	apiURL      string
	headerStyle string
	timeout     time.Duration
}

func (k *kairosFlags) register(fs *flagSet) {
	fs.StringVar(&k.apiURL, "api-url", kairos.DefaultBaseURL, "Kairos liveness-verification endpoint")
	fs.bindEnv("api-url", "KAIROS_API_URL")
	fs.StringVar(&k.headerStyle, "header-style", "hyphen", "credential header spelling: hyphen (app-id) or underscore (app_id)")
	fs.bindEnv("header-style", "KAIROS_HEADER_STYLE")
	fs.DurationVar(&k.timeout, "api-timeout", 30*time.Second, "per-request API timeout")
	fs.bindEnv("api-timeout", "KAIROS_API_TIMEOUT")
}

// client builds the Kairos client from the flags and KAIROS_APP_ID / KAIROS_APP_KEY,
// keeping up to conns connections to the API open (the calls made at once).
func (k *kairosFlags) client(env *environ, conns int) (*kairos.Client, error) {
	style := kairos.HeaderHyphen
	switch k.headerStyle {
	case "hyphen", "":
	case "underscore":
		style = kairos.HeaderUnderscore
	default:
		return nil, usagef("--header-style: %q is not one of hyphen, underscore", k.headerStyle)
	}
	id, key := env.getenv("KAIROS_APP_ID"), env.getenv("KAIROS_APP_KEY")
	if id == "" || key == "" {
		return nil, usagef("KAIROS_APP_ID and KAIROS_APP_KEY must both be set")
	}
	c, err := kairos.New(kairos.Config{BaseURL: k.apiURL, AppID: id, AppKey: key, HeaderStyle: style, Timeout: k.timeout, UserAgent: "livenessq", MaxConns: conns})
	if err != nil {
		return nil, usagef("--api-url: %v", err)
	}
	return c, nil
}

// newResults opens the results store on rdb and the results location.
func newResults(rdb redis.UniversalClient, bucket *storage.Bucket, log zerolog.Logger) (*results.Store, error) {
	return results.New(results.Config{Redis: rdb, Bucket: bucket, Logger: log})
}

// conns are what a command that reads or writes results opens from the common flags:
// Redis, the selfie storage, the results location and the results store on them.
type conns struct {
	rdb redis.UniversalClient
	// prdb is the client asynq and the verdicts talk through, and srdb the one the
	// results store does: rdb's autopipeliners when opened pipelined (the worker), else
	// rdb. See autoPipelined.
	prdb, srdb redis.UniversalClient
	src        *storage.Bucket
	res        *storage.Bucket
	store      *results.Store
}

// open connects to Redis (--redis), then opens the storage (--storage) and results
// (--results) locations and the results store on them, in that order, so that the first
// flag at fault is the one an error names. pipelined opens rdb's autopipeliners for the
// worker's traffic and puts the results store on one (see autoPipelined). The caller
// closes what open returns; on an error open has closed what it opened.
func (c *common) open(ctx context.Context, log zerolog.Logger, pipelined bool) (*conns, error) {
	rdb, err := openRedis(ctx, c.redisURL)
	if err != nil {
		return nil, err
	}
	cn := newConns(rdb, pipelined)
	if err := cn.openStores(ctx, c.storageURL, c.resultsURL, log); err != nil {
		cn.close()
		return nil, err
	}
	return cn, nil
}

// newConns starts conns on an open Redis client, which close closes.
func newConns(rdb redis.UniversalClient, pipelined bool) *conns {
	cn := &conns{rdb: rdb, prdb: rdb, srdb: rdb}
	if pipelined {
		cn.prdb, cn.srdb = autoPipelined(rdb)
	}
	return cn
}

// openStores opens the selfie storage at storageURL, the results location (resultsURL,
// or results/ under the storage root) and the results store on them.
func (cn *conns) openStores(ctx context.Context, storageURL, resultsURL string, log zerolog.Logger) error {
	var err error
	if cn.src, cn.res, err = openStorage(ctx, storageURL, resultsURL); err != nil {
		return err
	}
	cn.store, err = newResults(cn.srdb, cn.res, log)
	return err
}

// close closes what was opened, the last first. Closing Redis also stops its
// autopipeliner.
func (cn *conns) close() {
	if cn.res != nil {
		cn.res.Close()
	}
	if cn.src != nil {
		cn.src.Close()
	}
	cn.rdb.Close()
}

// openQueues reads --queue (one queue or several, comma-separated) and connects to
// Redis (--redis), in that order. The caller closes the client.
func (c *common) openQueues(ctx context.Context) ([]string, redis.UniversalClient, error) {
	queues, err := splitQueues(c.queue)
	if err != nil {
		return nil, nil, err
	}
	rdb, err := openRedis(ctx, c.redisURL)
	if err != nil {
		return nil, nil, err
	}
	return queues, rdb, nil
}
