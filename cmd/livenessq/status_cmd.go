package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/livenessq/livenessq/results"
	"github.com/livenessq/livenessq/worker"
)

func init() {
	register(&command{
		name:    "status",
		summary: "show queues, recent batches and the API budget (--batch ID, --watch, --json)",
		run:     runStatus,
	})
}

// statusFlags are the flags of `livenessq status`.
type statusFlags struct {
	common
	batch    string
	batches  int
	watch    bool
	interval time.Duration
	json     bool
}

// ansiClearHome moves the cursor home and clears the screen: how --watch redraws in place.
const ansiClearHome = "\x1b[H\x1b[2J"

func runStatus(ctx context.Context, env *environ, args []string) error {
	var f statusFlags
	fs := newFlagSet(env, "status", "[--batch ID] [--watch [--interval D]] [--json]")
	f.registerConnection(fs)
	fs.StringVar(&f.batch, "batch", "", "show one batch in detail: counts, flips and the score histogram")
	fs.bindEnv("batch", "LIVENESSQ_BATCH")
	fs.IntVar(&f.batches, "batches", 10, "how many recent batches to list (0: all)")
	fs.bindEnv("batches", "LIVENESSQ_STATUS_BATCHES")
	fs.BoolVar(&f.watch, "watch", false, "redraw every --interval until interrupted (with --json: one document a line)")
	fs.bindEnv("watch", "LIVENESSQ_STATUS_WATCH")
	fs.DurationVar(&f.interval, "interval", 2*time.Second, "redraw interval of --watch")
	fs.bindEnv("interval", "LIVENESSQ_STATUS_INTERVAL")
	fs.BoolVar(&f.json, "json", false, "print one JSON document (snake_case fields) instead of text")
	fs.bindEnv("json", "LIVENESSQ_JSON")
	if err := fs.parseNoArgs(args, ""); err != nil {
		return err
	}
	if f.batches < 0 {
		return usagef("--batches: %d must be 0 (all) or more", f.batches)
	}
	if f.interval < 100*time.Millisecond {
		return usagef("--interval: %v is too short (at least 100ms)", f.interval)
	}
	if f.batch != "" {
		if err := results.ValidateBatchID(f.batch); err != nil {
			return usagef("--batch: %v", err)
		}
	}
	queues, rdb, err := f.openQueues(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	store, done, err := redisOnlyResults(rdb)
	if err != nil {
		return err
	}
	defer done()
	sr := &statusReader{rdb: rdb, insp: asynq.NewInspectorFromRedisClient(rdb), store: store}

	draw := func() error {
		var buf bytes.Buffer
		var err error
		if f.batch != "" {
			err = sr.writeBatch(ctx, &buf, f.batch, f.json)
		} else {
			err = sr.writeOverview(ctx, &buf, queues, f.batches, f.json)
		}
		if err != nil {
			return err
		}
		if f.watch && !f.json {
			_, err = io.WriteString(env.stdout, ansiClearHome+buf.String())
		} else {
			_, err = env.stdout.Write(buf.Bytes())
		}
		return err
	}
	if !f.watch {
		return draw()
	}
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		if err := draw(); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// A watch survives a passing Redis outage: it shows the error and tries again.
			if f.json {
				fmt.Fprintf(env.stderr, "livenessq: %v\n", err)
			} else {
				fmt.Fprintf(env.stdout, "%s%s  status unavailable: %v\n", ansiClearHome, time.Now().UTC().Format(time.DateTime), err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// splitQueues reads --queue: one queue name, or several separated by commas.
func splitQueues(s string) ([]string, error) {
	var qs []string
	for q := range strings.SplitSeq(s, ",") {
		q = strings.TrimSpace(q)
		if q == "" {
			continue
		}
		if !slices.Contains(qs, q) {
			qs = append(qs, q)
		}
	}
	if len(qs) == 0 {
		return nil, usagef("--queue: a queue name is required")
	}
	return qs, nil
}

// statusReport is the document `livenessq status --json` prints. Its field names are a
// contract for scripts: add fields, never rename them.
type statusReport struct {
	Time    time.Time     `json:"time"`
	Queues  []queueStatus `json:"queues"`
	Budget  budgetStatus  `json:"budget"`
	Batches []batchStatus `json:"batches"`
}

// queueStatus is one asynq queue.
type queueStatus struct {
	Name           string  `json:"name"`
	Pending        int     `json:"pending"`
	Active         int     `json:"active"`
	Scheduled      int     `json:"scheduled"`
	Retry          int     `json:"retry"`
	Archived       int     `json:"archived"`
	Completed      int     `json:"completed"`
	ProcessedToday int     `json:"processed_today"`
	FailedToday    int     `json:"failed_today"`
	LatencySeconds float64 `json:"latency_seconds"`
	Paused         bool    `json:"paused"`
	// PauseSource says who paused the queue: "operator" (livenessq pause), "budget" (the
	// API refused our credentials or kept answering 403) or "unknown" (paused by other
	// means, e.g. asynqmon). Empty when the queue runs.
	PauseSource string     `json:"pause_source,omitempty"`
	PauseReason string     `json:"pause_reason,omitempty"`
	PausedAt    *time.Time `json:"paused_at,omitempty"`
	PausedBy    string     `json:"paused_by,omitempty"`
}

// budgetStatus is the global API budget as Redis holds it.
type budgetStatus struct {
	// Configured is false until a worker has published its budget settings.
	Configured  bool    `json:"configured"`
	Rate        float64 `json:"rate"`
	PaceRate    float64 `json:"pace_rate"`
	Burst       int     `json:"burst"`
	InFlight    int     `json:"in_flight"`
	MaxInFlight int     `json:"max_in_flight"`

	Cooling             bool       `json:"cooling"`
	CooldownUntil       *time.Time `json:"cooldown_until,omitempty"`
	CooldownSecondsLeft float64    `json:"cooldown_seconds_left"`
	CooldownStreak      int        `json:"cooldown_streak"`
	Probing             bool       `json:"probing"`
	LimitedSince        *time.Time `json:"limited_since,omitempty"`

	Paused      bool       `json:"paused"`
	PauseReason string     `json:"pause_reason,omitempty"`
	PausedAt    *time.Time `json:"paused_at,omitempty"`

	Quota        int64      `json:"quota"`
	QuotaUsed    int64      `json:"quota_used"`
	QuotaLeft    int64      `json:"quota_left"`
	QuotaResetAt *time.Time `json:"quota_reset_at,omitempty"`
}

// batchStatus is one batch: where it came from, how far it got and what it found.
type batchStatus struct {
	ID          string                   `json:"id"`
	Source      string                   `json:"source,omitempty"`
	Storage     string                   `json:"storage,omitempty"`
	Threshold   float64                  `json:"threshold"`
	CreatedAt   time.Time                `json:"created_at"`
	UpdatedAt   time.Time                `json:"updated_at"`
	Enqueued    int64                    `json:"enqueued"`
	Duplicates  int64                    `json:"duplicates"`
	Malformed   int64                    `json:"malformed"`
	EnqueueDone bool                     `json:"enqueue_done"`
	Done        int64                    `json:"done"`
	Progress    float64                  `json:"progress"`
	Complete    bool                     `json:"complete"`
	Counts      map[results.Status]int64 `json:"counts"`
	Histogram   []int64                  `json:"histogram"`
	Flips       map[string]int64         `json:"flips"`
	CallbackURL string                   `json:"callback_url,omitempty"`
	Callback    string                   `json:"callback_state,omitempty"`
}

// statusReader reads everything status shows.
type statusReader struct {
	rdb   redis.UniversalClient
	insp  *asynq.Inspector
	store *results.Store
}

// report reads the overview: queues, budget and the newest limit batches.
func (sr *statusReader) report(ctx context.Context, queues []string, limit int) (*statusReport, error) {
	rep := &statusReport{Time: time.Now().UTC(), Queues: []queueStatus{}, Batches: []batchStatus{}}
	bs, err := worker.ReadBudgetState(ctx, sr.rdb)
	if err != nil {
		return nil, err
	}
	rep.Budget = newBudgetStatus(bs)
	for _, q := range queues {
		qs, err := sr.queue(ctx, q, rep.Budget)
		if err != nil {
			return nil, err
		}
		rep.Queues = append(rep.Queues, qs)
	}
	sums, err := sr.store.Batches(ctx, limit)
	if err != nil {
		return nil, fmt.Errorf("read batches: %w", err)
	}
	for i := range sums {
		rep.Batches = append(rep.Batches, newBatchStatus(&sums[i]))
	}
	return rep, nil
}

// queue reads one asynq queue and, when it is paused, who paused it and why.
func (sr *statusReader) queue(ctx context.Context, name string, budget budgetStatus) (queueStatus, error) {
	qs := queueStatus{Name: name}
	known, err := sr.insp.Queues()
	if err != nil {
		return qs, fmt.Errorf("list queues: %w", err)
	}
	if slices.Contains(known, name) {
		info, err := sr.insp.GetQueueInfo(name)
		if err != nil {
			return qs, fmt.Errorf("read queue %q: %w", name, err)
		}
		qs.Pending, qs.Active, qs.Scheduled = info.Pending, info.Active, info.Scheduled
		qs.Retry, qs.Archived, qs.Completed = info.Retry, info.Archived, info.Completed
		qs.ProcessedToday, qs.FailedToday = info.Processed, info.Failed
		qs.LatencySeconds = info.Latency.Seconds()
		qs.Paused = info.Paused
	} else {
		// asynq knows a queue once a task went to it; it can be paused before that.
		qs.Paused, err = queuePaused(ctx, sr.rdb, name)
		if err != nil {
			return qs, err
		}
	}
	if !qs.Paused {
		return qs, nil
	}
	rec, err := readPauseRecord(ctx, sr.rdb, name)
	if err != nil {
		return qs, err
	}
	switch {
	case rec != nil:
		qs.PauseSource, qs.PauseReason, qs.PausedBy = "operator", rec.Reason, rec.By
		if !rec.At.IsZero() {
			qs.PausedAt = &rec.At
		}
	case budget.Paused:
		qs.PauseSource, qs.PauseReason, qs.PausedAt = "budget", budget.PauseReason, budget.PausedAt
	default:
		qs.PauseSource, qs.PauseReason = "unknown", "paused outside livenessq (no reason recorded)"
	}
	return qs, nil
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func newBudgetStatus(s worker.BudgetState) budgetStatus {
	b := budgetStatus{
		Configured: s.Configured, Rate: s.Rate, PaceRate: s.PaceRate, Burst: s.Burst,
		InFlight: s.InFlight, MaxInFlight: s.MaxInFlight,
		Cooling: s.Cooling, CooldownUntil: timePtr(s.CooldownUntil), CooldownStreak: s.CooldownStreak,
		Probing: s.Probing, LimitedSince: timePtr(s.LimitedSince),
		Paused: s.Paused, PauseReason: s.PauseReason, PausedAt: timePtr(s.PausedAt),
		Quota: s.Quota, QuotaUsed: s.QuotaUsed, QuotaLeft: s.QuotaLeft, QuotaResetAt: timePtr(s.QuotaResetAt),
	}
	if s.Cooling && s.CooldownUntil.After(s.Now) {
		b.CooldownSecondsLeft = math.Round(s.CooldownUntil.Sub(s.Now).Seconds()*10) / 10
	}
	return b
}

func newBatchStatus(s *results.BatchSummary) batchStatus {
	b := batchStatus{
		ID: s.Info.ID, Source: s.Info.Source, Storage: s.Info.Storage, Threshold: s.Info.Threshold,
		CreatedAt: s.Info.CreatedAt.UTC(), UpdatedAt: s.UpdatedAt.UTC(),
		Enqueued: s.Enqueued, Duplicates: s.Duplicates, Malformed: s.Malformed, EnqueueDone: s.EnqueueDone,
		Done: s.Done, Progress: s.Progress, Complete: s.Complete,
		Counts: map[results.Status]int64{}, Histogram: s.Histogram[:], Flips: map[string]int64{},
		CallbackURL: s.Info.CallbackURL, Callback: s.Info.CallbackState,
	}
	// Every status is present, zeros included, so that scripts need no defaulting.
	for _, st := range results.Statuses {
		b.Counts[st] = s.Counts[st]
	}
	for k, v := range s.Flips {
		b.Flips[k] = v
	}
	return b
}

// writeOverview writes the overview as text or JSON.
func (sr *statusReader) writeOverview(ctx context.Context, w io.Writer, queues []string, limit int, asJSON bool) error {
	rep, err := sr.report(ctx, queues, limit)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSONLine(w, rep)
	}
	writeOverviewText(w, rep)
	return nil
}

// writeBatch writes one batch in detail as text or JSON.
func (sr *statusReader) writeBatch(ctx context.Context, w io.Writer, id string, asJSON bool) error {
	sum, err := sr.store.Batch(ctx, id)
	if errors.Is(err, results.ErrBatchNotFound) {
		return fmt.Errorf("batch %q not found: never created, or expired after its retention", id)
	}
	if err != nil {
		return fmt.Errorf("read batch %q: %w", id, err)
	}
	b := newBatchStatus(sum)
	if asJSON {
		return writeJSONLine(w, struct {
			Time  time.Time   `json:"time"`
			Batch batchStatus `json:"batch"`
		}{time.Now().UTC(), b})
	}
	writeBatchText(w, &b)
	return nil
}

func writeOverviewText(w io.Writer, rep *statusReport) {
	fmt.Fprintf(w, "livenessq status  %s UTC\n\n", rep.Time.Format(time.DateTime))

	tw := newTextTable("QUEUE", "STATE", "PENDING", "ACTIVE", "SCHEDULED", "RETRY", "ARCHIVED", "COMPLETED", "DONE TODAY", "FAILED TODAY")
	for _, q := range rep.Queues {
		state := "running"
		if q.Paused {
			state = "PAUSED"
		}
		tw.row(q.Name, state, q.Pending, q.Active, q.Scheduled, q.Retry, q.Archived, q.Completed, q.ProcessedToday, q.FailedToday)
	}
	tw.write(w)
	for _, q := range rep.Queues {
		if !q.Paused {
			continue
		}
		fmt.Fprintf(w, "Queue %s is PAUSED by %s", q.Name, q.PauseSource)
		if q.PausedBy != "" {
			fmt.Fprintf(w, " (%s)", q.PausedBy)
		}
		if q.PausedAt != nil {
			fmt.Fprintf(w, " since %s UTC", q.PausedAt.Format(time.DateTime))
		}
		fmt.Fprintf(w, ": %s\n  Run `livenessq resume` to restart processing.\n", q.PauseReason)
	}

	fmt.Fprintf(w, "\nAPI budget: %s\n", budgetLine(&rep.Budget))
	if c := cooldownLine(&rep.Budget); c != "" {
		fmt.Fprintf(w, "  %s\n", c)
	}
	if rep.Budget.Paused {
		fmt.Fprintf(w, "  budget pause recorded: %s\n", rep.Budget.PauseReason)
	}
	if rep.Budget.Quota > 0 {
		fmt.Fprintf(w, "  quota: %d of %d used, %d left", rep.Budget.QuotaUsed, rep.Budget.Quota, rep.Budget.QuotaLeft)
		if rep.Budget.QuotaResetAt != nil {
			fmt.Fprintf(w, ", resets %s UTC", rep.Budget.QuotaResetAt.Format(time.DateTime))
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintln(w)
	if len(rep.Batches) == 0 {
		fmt.Fprintln(w, "No batches.")
		return
	}
	fmt.Fprintln(w, "Batches, newest first:")
	bt := newTextTable("BATCH", "SOURCE", "DONE/ENQUEUED", "PROGRESS", "STATE", "FLIPS", "COUNTS")
	for i := range rep.Batches {
		b := &rep.Batches[i]
		var flips int64
		for _, n := range b.Flips {
			flips += n
		}
		bt.row(b.ID, truncate(b.Source, 32), fmt.Sprintf("%d/%d", b.Done, b.Enqueued),
			fmt.Sprintf("%.1f%%", b.Progress*100), batchState(b), flips, countsLine(b.Counts))
	}
	bt.write(w)
	fmt.Fprintln(w, "\n`livenessq status --batch ID` shows a batch's score histogram and flips.")
}

func budgetLine(b *budgetStatus) string {
	if !b.Configured {
		return fmt.Sprintf("not published yet (no worker has run); %d call(s) in flight", b.InFlight)
	}
	var parts []string
	if b.Rate > 0 {
		parts = append(parts, fmt.Sprintf("rate %g/s (pacing %.1f/s, burst %d)", b.Rate, b.PaceRate, b.Burst))
	} else {
		parts = append(parts, "no rate limit")
	}
	if b.MaxInFlight > 0 {
		parts = append(parts, fmt.Sprintf("%d/%d calls in flight", b.InFlight, b.MaxInFlight))
	} else {
		parts = append(parts, fmt.Sprintf("%d calls in flight (no cap)", b.InFlight))
	}
	if !b.Cooling {
		parts = append(parts, "no cooldown")
	}
	return strings.Join(parts, ", ")
}

func cooldownLine(b *budgetStatus) string {
	if !b.Cooling {
		return ""
	}
	s := "usage-limit COOLDOWN"
	if b.CooldownUntil != nil && b.CooldownSecondsLeft > 0 {
		s += fmt.Sprintf(" until %s UTC (%.0fs left)", b.CooldownUntil.Format(time.DateTime), math.Ceil(b.CooldownSecondsLeft))
	} else if b.Probing {
		s += " over; a probe call is testing the API"
	} else {
		s += " over; the next call probes the API"
	}
	s += fmt.Sprintf(", streak %d", b.CooldownStreak)
	if b.LimitedSince != nil {
		s += fmt.Sprintf(", limited since %s UTC", b.LimitedSince.Format(time.DateTime))
	}
	return s
}

func batchState(b *batchStatus) string {
	switch {
	case b.Complete:
		return "complete"
	case !b.EnqueueDone:
		return "enqueueing"
	default:
		return "running"
	}
}

// countsLine lists the non-zero counts in display order: "live=3 not_live=1".
func countsLine(c map[results.Status]int64) string {
	var parts []string
	for _, st := range results.Statuses {
		if n := c[st]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", st, n))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

func writeBatchText(w io.Writer, b *batchStatus) {
	fmt.Fprintf(w, "Batch %s\n", b.ID)
	kv := func(k, format string, args ...any) {
		fmt.Fprintf(w, "  %-11s "+format+"\n", append([]any{k}, args...)...)
	}
	if b.Source != "" {
		kv("source", "%s", b.Source)
	}
	if b.Storage != "" {
		kv("storage", "%s", b.Storage)
	}
	kv("threshold", "%g", b.Threshold)
	kv("created", "%s UTC", b.CreatedAt.Format(time.DateTime))
	kv("updated", "%s UTC", b.UpdatedAt.Format(time.DateTime))
	done := "still enqueueing"
	if b.EnqueueDone {
		done = "fully enqueued"
	}
	kv("enqueued", "%d (duplicates %d, malformed %d), %s", b.Enqueued, b.Duplicates, b.Malformed, done)
	kv("progress", "%d/%d (%.1f%%), %s", b.Done, b.Enqueued, b.Progress*100, batchState(b))
	if b.CallbackURL != "" {
		state := b.Callback
		if state == "" {
			state = "pending"
		}
		kv("callback", "%s (%s)", b.CallbackURL, state)
	}

	fmt.Fprintln(w, "\nResults by status:")
	for _, st := range results.Statuses {
		n := b.Counts[st]
		pct := 0.0
		if b.Done > 0 {
			pct = float64(n) / float64(b.Done) * 100
		}
		fmt.Fprintf(w, "  %-14s %8d  %5.1f%%\n", st, n, pct)
	}

	if len(b.Flips) > 0 {
		fmt.Fprintln(w, "\nFlips against the previous result:")
		names := make([]string, 0, len(b.Flips))
		for k := range b.Flips {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			fmt.Fprintf(w, "  %-28s %8d\n", strings.Replace(k, ">", " -> ", 1), b.Flips[k])
		}
	}

	var scored int64
	for _, n := range b.Histogram {
		scored += n
	}
	fmt.Fprintf(w, "\nScore histogram (%d scored results, threshold %g):\n", scored, b.Threshold)
	writeHistogram(w, b.Histogram, 40, b.Threshold)
}

// writeHistogram draws the 20-bin histogram as text bars scaled to width characters
// (as `livenessq run` does), marking the bin that holds threshold.
func writeHistogram(w io.Writer, bins []int64, width int, threshold float64) {
	var peak int64
	for _, n := range bins {
		peak = max(peak, n)
	}
	tbin := results.HistogramBin(threshold)
	for i, n := range bins {
		lo, hi := float64(i)/float64(len(bins)), float64(i+1)/float64(len(bins))
		bar := 0
		if peak > 0 {
			bar = int((n*int64(width) + peak - 1) / peak) // rounded up: any result shows
		}
		mark := ""
		if i == tbin {
			mark = "  ← threshold"
		}
		fmt.Fprintf(w, "  %.2f–%.2f %-*s %d%s\n", lo, hi, width, strings.Repeat("#", bar), n, mark)
	}
}

func truncate(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// textTable lays out rows in columns separated by two spaces; numbers align right.
type textTable struct {
	head []string
	rows [][]string
	num  []bool
}

func newTextTable(head ...string) *textTable {
	return &textTable{head: head, num: make([]bool, len(head))}
}

func (t *textTable) row(cells ...any) {
	r := make([]string, len(cells))
	for i, c := range cells {
		switch c.(type) {
		case int, int64:
			t.num[i] = true
		}
		r[i] = fmt.Sprint(c)
	}
	t.rows = append(t.rows, r)
}

func (t *textTable) write(w io.Writer) {
	width := make([]int, len(t.head))
	for i, h := range t.head {
		width[i] = len(h)
	}
	for _, r := range t.rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		for i, c := range cells {
			if i > 0 {
				b.WriteString("  ")
			}
			pad := strings.Repeat(" ", width[i]-len([]rune(c)))
			switch {
			case t.num[i]:
				b.WriteString(pad + c)
			case i == len(cells)-1:
				b.WriteString(c)
			default:
				b.WriteString(c + pad)
			}
		}
		fmt.Fprintln(w, b.String())
	}
	line(t.head)
	for _, r := range t.rows {
		line(r)
	}
}
