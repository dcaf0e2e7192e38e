package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/livenessq/livenessq/storage"
)

func init() {
	register(&command{name: "bench", summary: "run the benchmarks on real Redis, an S3 server, the emulator and worker processes; print ratios", run: runBench})
}

// benchScenarios are the scenarios in the order they run; --only picks some.
var benchScenarios = []string{"budget", "overhead", "latency", "meet", "enqueue", "memory"}

// benchFlags are the bench's flags: what to run, on what, and how big.
type benchFlags struct {
	only    string
	workDir string
	report  string
	profile bool
	svc     benchServiceFlags

	selfies int // size of the 100 KB set

	budgetRate        int
	budgetSelfies     int
	budgetWorkers     int
	budgetConcurrency int
	budgetInflight    int
	budgetDuration    time.Duration
	budgetKillAt      time.Duration
	budgetLatency     time.Duration
	budgetEnforce     bool
	budgetMargin      float64
	cooldown          time.Duration
	emulatorNice      int

	overheadTasks       int
	overheadConcurrency int

	latencyTasks       int
	latencyConcurrency int
	latency            time.Duration

	meetTasks       int
	meetRate        int
	meetWorkers     int
	meetConcurrency int
	meetLatency     time.Duration

	enqueueKeys int

	memoryObjects     int
	memoryTasks       int
	memoryConcurrency int
	memoryLatency     time.Duration

	pollInterval time.Duration
}

func (f *benchFlags) register(fs *flagSet) {
	fs.StringVar(&f.only, "only", strings.Join(benchScenarios, ","), "scenarios to run, comma-separated: "+strings.Join(benchScenarios, ", "))
	fs.StringVar(&f.workDir, "work-dir", "", "where logs (and profiles) go; default a new directory under $TMPDIR, printed")
	fs.StringVar(&f.report, "report", "", "also write the machine, the command and the printout as Markdown to this file (e.g. BENCHMARKS.md)")
	fs.BoolVar(&f.profile, "profile", false, "run our workers with a CPU and heap profile each, written under the work directory")
	f.svc.register(fs)

	fs.IntVar(&f.selfies, "selfies", 10000, "number of ~100 KB JPEGs uploaded once and shared by the budget, overhead, latency and meet scenarios")

	fs.IntVar(&f.budgetRate, "budget-rate", 200, "budget: R, the emulator's limit in any 1-s window and the budget's --rate")
	fs.IntVar(&f.budgetSelfies, "budget-selfies", 7500, "budget: number of ~5 KB JPEGs queued for each run (more than R × the duration, so the queue never runs dry)")
	fs.IntVar(&f.budgetWorkers, "budget-workers", 4, "budget: worker processes")
	fs.IntVar(&f.budgetConcurrency, "budget-concurrency", 32, "budget: --concurrency of each worker")
	fs.IntVar(&f.budgetInflight, "budget-max-inflight", 64, "budget: --max-inflight, the cap on API calls in flight across workers")
	fs.DurationVar(&f.budgetDuration, "budget-duration", 30*time.Second, "budget: length of each run")
	fs.DurationVar(&f.budgetKillAt, "budget-kill-at", 15*time.Second, "budget: when one worker is killed (SIGKILL)")
	fs.DurationVar(&f.budgetLatency, "budget-latency", 100*time.Millisecond, "budget: the emulator's latency")
	fs.Float64Var(&f.budgetMargin, "budget-margin", 0, "budget: give our workers --rate R×(1−margin) rather than R, to see what margin the emulator's exact window needs")
	fs.IntVar(&f.emulatorNice, "emulator-nice", -10, "run the emulator at this nice(1) adjustment (0: as is; a negative one needs root or CAP_SYS_NICE, else it runs as is): the API's clock runs on machines of its own, here it shares the CPUs with the workers it measures")
	fs.DurationVar(&f.cooldown, "cooldown", time.Second, "budget and meet: our workers' --cooldown after a 403 (the emulator's window is 1 s; the worker's default of 60 s would turn one 403 into the rest of the run)")
	fs.BoolVar(&f.budgetEnforce, "budget-enforce", true, "budget: the emulator answers 403 beyond R in a 1-s window (false: it only counts, to see the rate the budget paces at)")

	fs.IntVar(&f.overheadTasks, "overhead-tasks", 3000, "overhead: selfies verified, and no-op tasks run")
	fs.IntVar(&f.overheadConcurrency, "overhead-concurrency", 32, "overhead: --concurrency of the worker and of the no-op worker")

	fs.IntVar(&f.latencyTasks, "latency-tasks", 6000, "latency: selfies verified")
	fs.IntVar(&f.latencyConcurrency, "latency-concurrency", 64, "latency: --concurrency of the worker")
	fs.DurationVar(&f.latency, "latency", 200*time.Millisecond, "latency: the emulator's latency")

	fs.IntVar(&f.meetTasks, "meet-tasks", 10000, "meet: selfies in the batch")
	fs.IntVar(&f.meetRate, "meet-rate", 500, "meet: the budget's --rate, also the emulator's limit in any 1-s window")
	fs.IntVar(&f.meetWorkers, "meet-workers", 2, "meet: worker processes")
	fs.IntVar(&f.meetConcurrency, "meet-concurrency", 32, "meet: --concurrency of each worker")
	fs.DurationVar(&f.meetLatency, "meet-latency", 0, "meet: the emulator's latency")

	fs.IntVar(&f.enqueueKeys, "enqueue-keys", 100000, "enqueue: keys listed and enqueued (the small run lists 10,000)")

	fs.IntVar(&f.memoryObjects, "memory-objects", 128, "memory: ~5 MB 3000×3000 JPEGs uploaded")
	fs.IntVar(&f.memoryTasks, "memory-tasks", 256, "memory: selfies verified (the objects, in as many batches as needed)")
	fs.IntVar(&f.memoryConcurrency, "memory-concurrency", 64, "memory: --concurrency of the worker")
	fs.DurationVar(&f.memoryLatency, "memory-latency", 0, "memory: the emulator's latency")

	fs.DurationVar(&f.pollInterval, "poll-interval", 100*time.Millisecond, "--poll-interval of every worker (how soon an idle worker sees new tasks)")
}

// validate checks the sizes and returns the scenarios to run.
func (f *benchFlags) validate() ([]string, error) {
	var only []string
	for s := range strings.SplitSeq(f.only, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(benchScenarios, s) {
			return nil, usagef("--only: %q is not one of %s", s, strings.Join(benchScenarios, ", "))
		}
		only = append(only, s)
	}
	if len(only) == 0 {
		return nil, usagef("--only: name at least one of %s", strings.Join(benchScenarios, ", "))
	}
	positive := map[string]int{
		"--selfies": f.selfies, "--budget-rate": f.budgetRate, "--budget-selfies": f.budgetSelfies, "--budget-workers": f.budgetWorkers,
		"--budget-concurrency": f.budgetConcurrency, "--overhead-tasks": f.overheadTasks,
		"--overhead-concurrency": f.overheadConcurrency, "--latency-tasks": f.latencyTasks,
		"--latency-concurrency": f.latencyConcurrency, "--meet-tasks": f.meetTasks, "--meet-rate": f.meetRate,
		"--meet-workers": f.meetWorkers, "--meet-concurrency": f.meetConcurrency, "--enqueue-keys": f.enqueueKeys,
		"--memory-objects": f.memoryObjects, "--memory-tasks": f.memoryTasks, "--memory-concurrency": f.memoryConcurrency,
	}
	for name, v := range positive {
		if v < 1 {
			return nil, usagef("%s: must be at least 1, got %d", name, v)
		}
	}
	switch {
	case f.cooldown <= 0:
		return nil, usagef("--cooldown: must be positive, got %v", f.cooldown)
	case f.budgetMargin < 0 || f.budgetMargin >= 1:
		return nil, usagef("--budget-margin: must be within [0, 1), got %v", f.budgetMargin)
	case f.budgetInflight < 0:
		return nil, usagef("--budget-max-inflight: must be ≥ 0, got %d", f.budgetInflight)
	case f.budgetKillAt <= 0 || f.budgetKillAt >= f.budgetDuration:
		return nil, usagef("--budget-kill-at: must be within (0, --budget-duration), got %v", f.budgetKillAt)
	case f.enqueueKeys < 10000:
		return nil, usagef("--enqueue-keys: must be at least 10000 (the small run), got %d", f.enqueueKeys)
	case f.pollInterval <= 0:
		return nil, usagef("--poll-interval: must be positive, got %v", f.pollInterval)
	}
	for s, n := range map[string]int{"overhead": f.overheadTasks, "latency": f.latencyTasks, "meet": f.meetTasks} {
		if n > f.selfies && slices.Contains(only, s) {
			return nil, usagef("--selfies (%d) must be at least the tasks of the %s scenario (%d)", f.selfies, s, n)
		}
	}
	return only, nil
}

// bench is one run of `livenessq bench`.
type bench struct {
	env     *environ
	f       *benchFlags
	exe     string
	svc     *benchServices
	bucket  *storage.Bucket
	logDir  string
	profDir string
	out     io.Writer // the printout: stdout, and the report
	verdict []string  // the "name: measured vs target → PASS/MISS" lines
	missed  int
}

// logf prints a progress line of the printout.
func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.out, format+"\n", args...)
}

// check records and prints one target line.
func (b *bench) check(name, measured, target string, pass bool) {
	v := "PASS"
	if !pass {
		v = "MISS"
		b.missed++
	}
	line := fmt.Sprintf("%s: %s vs %s → %s", name, measured, target, v)
	b.verdict = append(b.verdict, line)
	b.logf("  %s", line)
}

func runBench(ctx context.Context, env *environ, args []string) error {
	if len(args) > 0 {
		if role, ok := benchRoles[args[0]]; ok {
			return role(ctx, env, args[1:])
		}
	}
	var f benchFlags
	fs := newFlagSet(env, "bench", "[flags]")
	f.register(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("bench: unexpected arguments %q", fs.Args())
	}
	only, err := f.validate()
	if err != nil {
		return err
	}
	if runtime.GOOS != "linux" {
		return errors.New("bench: reads /proc for the CPU time and memory of its processes: Linux only")
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: find the livenessq binary: %w", err)
	}
	workDir := f.workDir
	if workDir == "" {
		if workDir, err = os.MkdirTemp("", "livenessq-bench-"); err != nil {
			return err
		}
	}
	logDir, profDir := filepath.Join(workDir, "logs"), filepath.Join(workDir, "profiles")
	for _, d := range []string{logDir, profDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	tmpDir, err := os.MkdirTemp("", "livenessq-bench-data-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmpDir)

	var printout bytes.Buffer
	b := &bench{env: env, f: &f, exe: exe, logDir: logDir, profDir: profDir, out: io.MultiWriter(env.stdout, &printout)}
	started := time.Now()
	m := readMachine()
	b.logf("livenessq bench — %s", strings.Join(only, ", "))
	b.logf("machine: %s", m)
	b.logf("logs: %s", logDir)

	svc, err := f.svc.start(ctx, env, logDir, tmpDir)
	if err != nil {
		return err
	}
	defer svc.stop()
	b.svc = svc
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": svc.s3.access, "AWS_SECRET_ACCESS_KEY": svc.s3.secret, "AWS_REGION": svc.s3.region} {
		os.Setenv(k, v) // for the buckets this process opens by URL
	}
	b.logf("services: Redis %s, S3 %s (bucket %s)", svc.redisAddr, svc.s3.endpoint, svc.s3.bucket)
	b.bucket, err = svc.s3.open(ctx)
	if err != nil {
		return fmt.Errorf("bench: open the bench bucket: %w", err)
	}
	defer b.bucket.Close()
	if err := b.prepare(ctx, only); err != nil {
		return err
	}

	run := map[string]func(context.Context) error{
		"budget": b.runBudget, "overhead": b.runOverhead, "latency": b.runLatency,
		"meet": b.runMeet, "enqueue": b.runEnqueue, "memory": b.runMemory,
	}
	var errs []error
	for _, s := range only {
		if ctx.Err() != nil {
			break
		}
		b.logf("")
		t := time.Now()
		if err := run[s](ctx); err != nil {
			b.logf("  %s: ERROR %v", s, err)
			b.verdict = append(b.verdict, fmt.Sprintf("%s: ERROR %v", s, err))
			errs = append(errs, fmt.Errorf("%s: %w", s, err))
		}
		b.logf("  (%s took %v; load average now %s)", s, time.Since(t).Round(time.Second), loadAverage())
	}
	b.logf("")
	b.logf("summary (%v, load average at the end %s):", time.Since(started).Round(time.Second), loadAverage())
	for _, v := range b.verdict {
		b.logf("  %s", v)
	}
	if f.report != "" {
		if err := writeBenchReport(f.report, m, args, printout.String()); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(env.stdout, "report written to %s\n", f.report)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if b.missed > 0 {
		return fmt.Errorf("bench: %d target(s) missed", b.missed)
	}
	return nil
}

// prepare uploads the objects the chosen scenarios need (once: a marker records each
// set).
func (b *bench) prepare(ctx context.Context, only []string) error {
	var sets []benchSet
	if slices.ContainsFunc(only, func(s string) bool { return s == "overhead" || s == "latency" || s == "meet" }) {
		sets = append(sets, selfies100K(b.f.selfies))
	}
	if slices.Contains(only, "budget") {
		sets = append(sets, selfiesSmall(b.f.budgetSelfies))
	}
	if slices.Contains(only, "enqueue") {
		sets = append(sets, enqueueKeys(b.f.enqueueKeys))
	}
	if slices.Contains(only, "memory") {
		sets = append(sets, selfies5M(b.f.memoryObjects))
	}
	for _, s := range sets {
		if err := s.ensure(ctx, b.bucket, 32, b.logf); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	return nil
}
