package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // --tz works in a distroless image, which has no zoneinfo

	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"
	"github.com/rs/zerolog"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/storage"
)

func init() {
	register(&command{
		name:    "schedule",
		summary: "run cron-scheduled batches, e.g. nightly re-verification of a prefix",
		run:     runSchedule,
	})
}

const scheduleUsage = `(--every 'SPEC=PREFIX' ... | --config FILE) [flags]

Each firing of a schedule enqueues every key under PREFIX (in --storage) as a new batch
named sched-NAME-<slot time, UTC, e.g. 20261127T020000Z>. Any number of schedulers may run
with the same schedules: each slot is fired once (a Redis lock per slot, and task ids that
derive from the batch id so that a second enqueue of a slot adds nothing).

SPEC is a cron spec: 5 fields (minute hour day-of-month month day-of-week), or 6 with
seconds first ("*/30 * * * * *"), or a descriptor (@yearly @monthly @weekly @daily
@hourly, "@every 6h": fired at multiples of the duration since the Unix epoch, so that
every scheduler agrees on the slots). Specs are read in --tz (UTC by default); a spec may
start with CRON_TZ=Zone/Name to use another zone.

--every 'SPEC=PREFIX' is repeatable (in $LIVENESSQ_SCHEDULE, separate entries with ';');
its name derives from the prefix. --config FILE holds the schedules, either as JSON:
  {"timezone": "UTC", "schedules": [
    {"name": "nightly", "spec": "0 2 * * *", "prefix": "selfies/", "threshold": 0.7}]}
or one schedule a line, SPEC, a TAB, then PREFIX and optional name=NAME threshold=T
(# starts a comment; quote a prefix with spaces, or the empty prefix, as "..."):
  0 2 * * *<TAB>selfies/ name=nightly threshold=0.7
  @weekly<TAB>"" name=everything`

// scheduleEntry is one schedule: a cron spec and the prefix it enqueues.
type scheduleEntry struct {
	// Name identifies the schedule in batch ids, locks and logs: ASCII letters, digits,
	// '.', '_' and '-'.
	Name string `json:"name"`
	// Spec is the cron spec.
	Spec string `json:"spec"`
	// Prefix is the key prefix listed at each firing; "" lists the whole storage.
	Prefix string `json:"prefix"`
	// Threshold is the batch's liveness threshold; 0 means --threshold.
	Threshold float64 `json:"threshold,omitempty"`

	sched cron.Schedule
}

// scheduleFile is the JSON form of --config.
type scheduleFile struct {
	Timezone  string          `json:"timezone"`
	Schedules []scheduleEntry `json:"schedules"`
}

// cronParser reads 5-field specs, 6-field specs with seconds first, and descriptors.
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// maxScheduleName bounds a schedule's name, so that batch ids stay short.
const maxScheduleName = 48

// everyFlag collects repeated --every values.
type everyFlag struct{ specs []string }

func (e *everyFlag) String() string { return strings.Join(e.specs, "; ") }

// Set adds one or more 'SPEC=PREFIX' entries (several separated by ';', as in
// $LIVENESSQ_SCHEDULE), checking their form.
func (e *everyFlag) Set(v string) error {
	for s := range strings.SplitSeq(v, ";") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if _, _, err := splitEvery(s); err != nil {
			return err
		}
		e.specs = append(e.specs, s)
	}
	return nil
}

// splitEvery splits 'SPEC=PREFIX' at the first '=' after a leading CRON_TZ=Zone.
func splitEvery(s string) (spec, prefix string, err error) {
	start := 0
	if strings.HasPrefix(s, "TZ=") || strings.HasPrefix(s, "CRON_TZ=") {
		if start = strings.IndexByte(s, ' '); start < 0 {
			return "", "", fmt.Errorf("%q: want 'SPEC=PREFIX'", s)
		}
	}
	i := strings.IndexByte(s[start:], '=')
	if i < 0 {
		return "", "", fmt.Errorf("%q: want 'SPEC=PREFIX' (e.g. '0 2 * * *=selfies/')", s)
	}
	return strings.TrimSpace(s[:start+i]), s[start+i+1:], nil
}

// scheduleFlags are the flags of `livenessq schedule`.
type scheduleFlags struct {
	common
	every       everyFlag
	config      string
	tz          string
	tzSet       bool // --tz (or its variable) was given
	threshold   float64
	lockTTL     time.Duration
	maxAttempts int
	dryRun      bool
}

func runSchedule(ctx context.Context, env *environ, args []string) error {
	var f scheduleFlags
	fs := newFlagSet(env, "schedule", scheduleUsage)
	f.registerConnection(fs)
	f.registerLogging(fs)
	fs.Var(&f.every, "every", "a schedule 'SPEC=PREFIX', e.g. '0 2 * * *=selfies/' (repeatable)")
	fs.bindEnv("every", "LIVENESSQ_SCHEDULE")
	fs.StringVar(&f.config, "config", "", "a file of schedules, JSON or one 'SPEC<TAB>PREFIX [name=N] [threshold=T]' a line")
	fs.bindEnv("config", "LIVENESSQ_SCHEDULE_FILE")
	fs.StringVar(&f.tz, "tz", "UTC", "time zone the specs are read in (IANA name, e.g. Europe/Paris)")
	fs.bindEnv("tz", "LIVENESSQ_SCHEDULE_TZ")
	fs.Float64Var(&f.threshold, "threshold", enqueue.DefaultThreshold, "liveness threshold of the batches, unless a schedule gives its own")
	fs.bindEnv("threshold", "LIVENESSQ_THRESHOLD")
	fs.IntVar(&f.maxAttempts, "max-attempts", 10, "attempts a task gets before it is archived as failed (at least 2)")
	fs.bindEnv("max-attempts", "LIVENESSQ_MAX_ATTEMPTS")
	fs.DurationVar(&f.lockTTL, "lock-ttl", 10*time.Minute, "how long a slot's lock keeps other schedulers from firing it")
	fs.bindEnv("lock-ttl", "LIVENESSQ_SCHEDULE_LOCK_TTL")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print the schedules and their next firings, then exit")
	fs.bindEnv("dry-run", "LIVENESSQ_SCHEDULE_DRY_RUN")
	if err := fs.parseNoArgs(args, " (quote each --every value)"); err != nil {
		return err
	}
	if err := checkThreshold(f.threshold); err != nil {
		return err
	}
	if f.maxAttempts < 2 {
		return usagef("--max-attempts: must be at least 2, got %d", f.maxAttempts)
	}
	fs.Visit(func(fl *flag.Flag) { f.tzSet = f.tzSet || fl.Name == "tz" })
	if f.lockTTL < time.Second {
		return usagef("--lock-ttl: %v is too short (at least 1s)", f.lockTTL)
	}
	entries, loc, err := loadSchedules(&f)
	if err != nil {
		return err
	}
	if f.dryRun {
		writeScheduleDryRun(env.stdout, entries, loc, time.Now())
		return nil
	}

	log, err := f.logger(env.stderr)
	if err != nil {
		return err
	}
	cn, err := f.open(ctx, log, false)
	if err != nil {
		return err
	}
	defer cn.close()
	enq, err := enqueue.New(enqueue.Config{Redis: cn.rdb, Batches: cn.store, Queue: f.queue,
		MaxRetry: f.maxAttempts - 1, Logger: log})
	if err != nil {
		return usagef("schedule: %v", err)
	}
	defer enq.Close()
	s := &scheduler{rdb: cn.rdb, enq: enq, bucket: cn.src, log: log, lockTTL: f.lockTTL,
		skip: resultsSkip(cn.src, cn.res, f.resultsURL != ""), owner: operatorName(env) + fmt.Sprintf(":%d", os.Getpid())}
	s.run(ctx, entries, loc)
	return nil
}

// loadSchedules reads the schedules from --every and --config and parses their specs in
// the time zone --tz (or the config file's) names.
func loadSchedules(f *scheduleFlags) ([]*scheduleEntry, *time.Location, error) {
	tz := f.tz
	var entries []*scheduleEntry
	names := map[string]int{}
	for _, e := range f.every.specs {
		spec, prefix, _ := splitEvery(e)
		entries = append(entries, &scheduleEntry{Name: uniqueName(names, nameFromPrefix(prefix)), Spec: spec, Prefix: prefix})
	}
	if f.config != "" {
		b, err := os.ReadFile(f.config)
		if err != nil {
			return nil, nil, usagef("--config: %v", err)
		}
		file, err := parseScheduleFile(b)
		if err != nil {
			return nil, nil, usagef("--config %s: %v", f.config, err)
		}
		if file.Timezone != "" && !f.tzSet {
			tz = file.Timezone
		}
		for i := range file.Schedules {
			e := file.Schedules[i]
			if e.Name == "" {
				e.Name = nameFromPrefix(e.Prefix)
			} else if err := validScheduleName(e.Name); err != nil {
				return nil, nil, usagef("--config %s: schedule %d: %v", f.config, i+1, err)
			}
			e.Name = uniqueName(names, e.Name)
			entries = append(entries, &e)
		}
	}
	if len(entries) == 0 {
		return nil, nil, usagef("schedule: no schedules: give --every 'SPEC=PREFIX' or --config FILE")
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, nil, usagef("--tz: %q is not a time zone (use an IANA name such as UTC or Europe/Paris)", tz)
	}
	for _, e := range entries {
		if e.sched, err = cronParser.Parse(e.Spec); err != nil {
			return nil, nil, usagef("schedule %s: spec %q: %v (want 5 fields, 6 with seconds first, or @daily, @every 1h, ...)", e.Name, e.Spec, err)
		}
		if e.Threshold == 0 {
			e.Threshold = f.threshold
		} else if err := enqueue.ValidateThreshold(e.Threshold); err != nil {
			return nil, nil, usagef("schedule %s: %v", e.Name, err)
		}
	}
	return entries, loc, nil
}

// parseScheduleFile reads a schedule file: JSON when it starts with '{' or '[', the line
// format otherwise.
func parseScheduleFile(b []byte) (*scheduleFile, error) {
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	t := bytes.TrimSpace(b)
	if len(t) > 0 && (t[0] == '{' || t[0] == '[') {
		var file scheduleFile
		dec := json.NewDecoder(bytes.NewReader(t))
		dec.DisallowUnknownFields()
		var err error
		if t[0] == '[' {
			err = dec.Decode(&file.Schedules)
		} else {
			err = dec.Decode(&file)
		}
		if err != nil {
			return nil, fmt.Errorf("JSON: %v", err)
		}
		for i, e := range file.Schedules {
			if strings.TrimSpace(e.Spec) == "" {
				return nil, fmt.Errorf("schedule %d has no spec", i+1)
			}
		}
		return &file, nil
	}
	var file scheduleFile
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if s := strings.TrimSpace(line); s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		e, err := parseScheduleLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", n, err)
		}
		file.Schedules = append(file.Schedules, *e)
	}
	return &file, sc.Err()
}

// parseScheduleLine reads "SPEC<TAB>PREFIX [name=NAME] [threshold=T]".
func parseScheduleLine(line string) (*scheduleEntry, error) {
	spec, rest, ok := strings.Cut(line, "\t")
	if !ok {
		return nil, fmt.Errorf("want SPEC, a TAB, then PREFIX [name=NAME] [threshold=T]")
	}
	e := &scheduleEntry{Spec: strings.TrimSpace(spec)}
	if e.Spec == "" {
		return nil, fmt.Errorf("empty spec")
	}
	rest = strings.TrimLeft(rest, " \t")
	if strings.HasPrefix(rest, `"`) {
		q, err := strconv.QuotedPrefix(rest)
		if err != nil {
			return nil, fmt.Errorf("bad quoted prefix: %v", err)
		}
		e.Prefix, _ = strconv.Unquote(q)
		rest = rest[len(q):]
	} else {
		i := strings.IndexAny(rest, " \t")
		if i < 0 {
			i = len(rest)
		}
		e.Prefix, rest = rest[:i], rest[i:]
		if e.Prefix == "" {
			return nil, fmt.Errorf(`no prefix (write "" for the whole storage)`)
		}
	}
	for _, opt := range strings.Fields(rest) {
		k, v, ok := strings.Cut(opt, "=")
		switch {
		case !ok:
			return nil, fmt.Errorf("option %q: want name=NAME or threshold=T", opt)
		case k == "name":
			if err := validScheduleName(v); err != nil {
				return nil, err
			}
			e.Name = v
		case k == "threshold":
			t, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("threshold %q is not a number", v)
			}
			if err := enqueue.ValidateThreshold(t); err != nil || t == 0 {
				return nil, fmt.Errorf("threshold %v is not a number in (0, 1]", t)
			}
			e.Threshold = t
		default:
			return nil, fmt.Errorf("unknown option %q (want name or threshold)", k)
		}
	}
	return e, nil
}

func validScheduleName(s string) error {
	if s == "" || len(s) > maxScheduleName {
		return fmt.Errorf("schedule name %q must have 1..%d characters", s, maxScheduleName)
	}
	for _, r := range s {
		if !nameChar(r) {
			return fmt.Errorf("schedule name %q may hold only ASCII letters, digits, '.', '_' and '-'", s)
		}
	}
	return nil
}

func nameChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
}

// nameFromPrefix names a schedule after its prefix: "selfies/2024/" → "selfies-2024",
// "" → "all".
func nameFromPrefix(prefix string) string {
	var b strings.Builder
	dash := false
	for _, r := range prefix {
		if nameChar(r) && r != '-' {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(r)
		} else {
			dash = true
		}
		if b.Len() >= maxScheduleName-3 {
			break
		}
	}
	if b.Len() == 0 {
		return "all"
	}
	return b.String()
}

// uniqueName returns name, or name-2, name-3, ... when it is taken.
func uniqueName(seen map[string]int, name string) string {
	seen[name]++
	if n := seen[name]; n > 1 {
		return fmt.Sprintf("%s-%d", name, n)
	}
	return name
}

// next returns the first slot of e after t. "@every D" schedules are aligned on
// multiples of D since the Unix epoch, so that every scheduler agrees on the slots.
func (e *scheduleEntry) next(t time.Time, loc *time.Location) time.Time {
	if cd, ok := e.sched.(cron.ConstantDelaySchedule); ok {
		d := cd.Delay.Nanoseconds()
		return time.Unix(0, (t.UnixNano()/d+1)*d).In(loc)
	}
	return e.sched.Next(t.In(loc))
}

// slotBatchID names the batch of e's firing at slot: the same in every scheduler.
func slotBatchID(name string, slot time.Time) string {
	return "sched-" + name + "-" + slot.UTC().Format("20060102T150405Z")
}

// slotLockKey names the lock that lets one scheduler fire e's slot.
func slotLockKey(name string, slot time.Time) string {
	return fmt.Sprintf("livenessq:{schedule}:slot:%s:%d", name, slot.Unix())
}

func writeScheduleDryRun(w io.Writer, entries []*scheduleEntry, loc *time.Location, now time.Time) {
	fmt.Fprintf(w, "%d schedule(s), specs read in %s:\n", len(entries), loc)
	for _, e := range entries {
		prefix := e.Prefix
		if prefix == "" {
			prefix = "(everything)"
		}
		fmt.Fprintf(w, "\n%s: %q, prefix %s, threshold %g\n", e.Name, e.Spec, prefix, e.Threshold)
		t := now
		for range 3 {
			t = e.next(t, loc)
			fmt.Fprintf(w, "  %s  batch %s\n", t.Format(time.RFC3339), slotBatchID(e.Name, t))
		}
	}
}

// scheduler fires schedules: each firing enqueues a prefix as a new batch.
type scheduler struct {
	rdb     redis.UniversalClient
	enq     *enqueue.Client
	bucket  *storage.Bucket
	skip    []string
	log     zerolog.Logger
	lockTTL time.Duration
	owner   string
}

// run fires every entry at its slots until ctx ends.
func (s *scheduler) run(ctx context.Context, entries []*scheduleEntry, loc *time.Location) {
	var wg sync.WaitGroup
	for _, e := range entries {
		s.log.Info().Str("schedule", e.Name).Str("spec", e.Spec).Str("prefix", e.Prefix).
			Float64("threshold", e.Threshold).Time("next", e.next(time.Now(), loc)).Msg("schedule loaded")
		wg.Go(func() { s.loop(ctx, e, loc) })
	}
	wg.Wait()
	s.log.Info().Msg("scheduler stopped")
}

// loop fires e at each of its slots, one firing at a time. Slots that pass while a
// firing runs are skipped (and logged); slots while the scheduler was down are not made
// up.
func (s *scheduler) loop(ctx context.Context, e *scheduleEntry, loc *time.Location) {
	slot := e.next(time.Now(), loc)
	timer := time.NewTimer(time.Until(slot))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		if wait := time.Until(slot); wait > 0 { // the wall clock moved back
			timer.Reset(wait)
			continue
		}
		s.fire(ctx, e, slot)
		next := e.next(slot, loc)
		if now := time.Now(); !next.After(now) {
			skipped := e.next(now, loc)
			s.log.Warn().Str("schedule", e.Name).Time("from", next).Time("next", skipped).
				Msg("slots passed while the previous firing ran; skipping to the next one")
			next = skipped
		}
		slot = next
		timer.Reset(time.Until(slot))
	}
}

// fire enqueues e's prefix as the batch of slot, unless another scheduler holds the
// slot's lock.
func (s *scheduler) fire(ctx context.Context, e *scheduleEntry, slot time.Time) {
	id := slotBatchID(e.Name, slot)
	log := s.log.With().Str("schedule", e.Name).Str("batch_id", id).Time("slot", slot).Logger()
	ok, err := s.rdb.SetNX(ctx, slotLockKey(e.Name, slot), s.owner, s.lockTTL).Result()
	if err != nil {
		log.Error().Err(err).Msg("schedule slot not fired: cannot take its lock")
		return
	}
	if !ok {
		log.Info().Msg("schedule slot taken by another scheduler")
		return
	}
	log.Info().Str("prefix", e.Prefix).Msg("schedule fired")
	sum, err := s.enq.Enqueue(ctx, enqueue.Batch{
		ID:        id,
		Storage:   s.bucket.URL(),
		Source:    fmt.Sprintf("schedule %s: prefix %q", e.Name, e.Prefix),
		Threshold: e.Threshold,
	}, enqueue.Prefix(ctx, s.bucket, e.Prefix, s.skip...), nil)
	ev := log.Info()
	if err != nil {
		ev = log.Error().Err(err)
	}
	ev.Int64("enqueued", sum.Enqueued).Int64("duplicates", sum.Duplicates).Int64("malformed", sum.Malformed).
		Bool("finished", sum.Finished).Dur("duration", sum.Duration).Msg("schedule batch enqueued")
}
