package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/enqueue"
	"github.com/livenessq/livenessq/results"
)

func TestSplitEvery(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc, in, spec, prefix string
		bad                    bool
	}{
		{desc: "five fields", in: "0 2 * * *=selfies/", spec: "0 2 * * *", prefix: "selfies/"},
		{desc: "empty prefix", in: "@daily=", spec: "@daily", prefix: ""},
		{desc: "prefix with =", in: "@hourly=date=2024/", spec: "@hourly", prefix: "date=2024/"},
		{desc: "time zone", in: "CRON_TZ=Europe/Paris 0 2 * * *=a/", spec: "CRON_TZ=Europe/Paris 0 2 * * *", prefix: "a/"},
		{desc: "no =", in: "0 2 * * *", bad: true},
		{desc: "time zone only", in: "CRON_TZ=UTC", bad: true},
	} {
		spec, prefix, err := splitEvery(tc.in)
		if tc.bad {
			require.Error(t, err, tc.desc)
			continue
		}
		require.NoError(t, err, tc.desc)
		require.Equal(t, tc.spec, spec, tc.desc)
		require.Equal(t, tc.prefix, prefix, tc.desc)
	}
}

func TestParseScheduleFile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc string
		in   string
		want *scheduleFile
		err  string
	}{
		{
			desc: "lines",
			in: "# nightly\n0 2 * * *\tselfies/ name=nightly threshold=0.7\r\n\n" +
				"@weekly\t\"\" name=all\n*/10 * * * * *\t\"with space/\"\n",
			want: &scheduleFile{Schedules: []scheduleEntry{
				{Name: "nightly", Spec: "0 2 * * *", Prefix: "selfies/", Threshold: 0.7},
				{Name: "all", Spec: "@weekly", Prefix: ""},
				{Spec: "*/10 * * * * *", Prefix: "with space/"},
			}},
		},
		{
			desc: "JSON",
			in:   `{"timezone": "Europe/Paris", "schedules": [{"name": "n", "spec": "0 2 * * *", "prefix": "a/", "threshold": 0.8}]}`,
			want: &scheduleFile{Timezone: "Europe/Paris", Schedules: []scheduleEntry{{Name: "n", Spec: "0 2 * * *", Prefix: "a/", Threshold: 0.8}}},
		},
		{
			desc: "JSON list",
			in:   `[{"spec": "@daily", "prefix": ""}]`,
			want: &scheduleFile{Schedules: []scheduleEntry{{Spec: "@daily"}}},
		},
		{desc: "no tab", in: "0 2 * * * selfies/\n", err: "line 1: want SPEC, a TAB"},
		{desc: "no prefix", in: "0 2 * * *\t\n", err: "line 1: no prefix"},
		{desc: "bad option", in: "0 2 * * *\ta/ color=red\n", err: `line 1: unknown option "color"`},
		{desc: "bad threshold", in: "0 2 * * *\ta/ threshold=2\n", err: "line 1: threshold 2 is not a number in (0, 1]"},
		{desc: "bad name", in: "0 2 * * *\ta/ name=a{b}\n", err: "may hold only"},
		{desc: "JSON typo", in: `{"schedule": []}`, err: `unknown field "schedule"`},
		{desc: "JSON without spec", in: `{"schedules": [{"prefix": "a/"}]}`, err: "schedule 1 has no spec"},
	} {
		got, err := parseScheduleFile([]byte(tc.in))
		if tc.err != "" {
			require.ErrorContains(t, err, tc.err, tc.desc)
			continue
		}
		require.NoError(t, err, tc.desc)
		if d := cmp.Diff(tc.want, got, cmpopts.IgnoreUnexported(scheduleEntry{})); d != "" {
			t.Errorf("%s (-want +got):\n%s", tc.desc, d)
		}
	}
}

func TestLoadSchedules(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "schedules")
	require.NoError(t, os.WriteFile(cfg, []byte("0 2 * * *\tselfies/ threshold=0.9\n"), 0o600))

	f := scheduleFlags{tz: "UTC", threshold: 0.6, config: cfg}
	require.NoError(t, f.every.Set("0 3 * * *=selfies/; @every 90m="))
	entries, loc, err := loadSchedules(&f)
	require.NoError(t, err)
	require.Equal(t, time.UTC, loc)
	var got []string
	for _, e := range entries {
		got = append(got, fmt.Sprintf("%s|%s|%s|%g", e.Name, e.Spec, e.Prefix, e.Threshold))
	}
	require.Equal(t, []string{
		"selfies|0 3 * * *|selfies/|0.6",
		"all|@every 90m||0.6",
		"selfies-2|0 2 * * *|selfies/|0.9", // the same prefix twice gets distinct names
	}, got)

	// Slots: cron specs in the time zone, @every on multiples since the Unix epoch.
	now := time.Date(2026, 11, 27, 12, 34, 56, 789, time.UTC)
	require.Equal(t, time.Date(2026, 11, 28, 3, 0, 0, 0, time.UTC), entries[0].next(now, loc).UTC())
	require.Equal(t, time.Date(2026, 11, 27, 13, 30, 0, 0, time.UTC), entries[1].next(now, loc).UTC())
	require.Equal(t, "sched-selfies-20261128T030000Z", slotBatchID("selfies", entries[0].next(now, loc)))
	require.NoError(t, results.ValidateBatchID(slotBatchID(strings.Repeat("n", maxScheduleName), now)))

	paris := scheduleFlags{tz: "Europe/Paris", threshold: 0.6}
	require.NoError(t, paris.every.Set("0 2 * * *=a/"))
	entries, loc, err = loadSchedules(&paris)
	require.NoError(t, err)
	require.Equal(t, time.Date(2026, 11, 28, 1, 0, 0, 0, time.UTC), entries[0].next(now, loc).UTC(), "02:00 in Paris (CET)")

	secs := scheduleFlags{tz: "UTC", threshold: 0.6}
	require.NoError(t, secs.every.Set("*/15 * * * * *=a/"))
	entries, loc, err = loadSchedules(&secs)
	require.NoError(t, err)
	require.Equal(t, time.Date(2026, 11, 27, 12, 35, 0, 0, time.UTC), entries[0].next(now, loc).UTC(), "6 fields: seconds first")

	for _, tc := range []struct {
		desc string
		f    scheduleFlags
		err  string
	}{
		{desc: "none", f: scheduleFlags{tz: "UTC", threshold: 0.6}, err: "no schedules"},
		{desc: "bad tz", f: scheduleFlags{tz: "Mars/Olympus", threshold: 0.6, every: everyFlag{specs: []string{"@daily=a/"}}}, err: "--tz"},
		{desc: "bad spec", f: scheduleFlags{tz: "UTC", threshold: 0.6, every: everyFlag{specs: []string{"61 * * * *=a/"}}}, err: `spec "61 * * * *"`},
		{desc: "missing file", f: scheduleFlags{tz: "UTC", threshold: 0.6, config: filepath.Join(dir, "nope")}, err: "--config"},
	} {
		_, _, err := loadSchedules(&tc.f)
		require.ErrorContains(t, err, tc.err, tc.desc)
		var ue *usageError
		require.ErrorAs(t, err, &ue, "%s: a usage error (exit 2)", tc.desc)
	}
}

func TestNameFromPrefix(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                         "all",
		"selfies/":                 "selfies",
		"selfies/2024/":            "selfies-2024",
		"a b/ünï/--x":              "a-b-n-x",
		strings.Repeat("x", 100):   strings.Repeat("x", maxScheduleName-3),
		"date=2024/region=eu-west": "date-2024-region-eu-west",
	} {
		got := nameFromPrefix(in)
		require.Equal(t, want, got, in)
		require.NoError(t, validScheduleName(got), in)
	}
}

// A firing enqueues the prefix as the slot's batch; a second firing of the same slot
// (another scheduler whose lock expired) finds every task there already and adds none.
func TestScheduleFireIsIdempotentPerSlot(t *testing.T) {
	sb := opsSetup(t, 5)
	rdb := sb.rdb
	enq, err := enqueue.New(enqueue.Config{Redis: rdb, Batches: sb.store, Queue: "sched-test"})
	require.NoError(t, err)
	defer enq.Close()
	var logs bytes.Buffer
	s := &scheduler{rdb: rdb, enq: enq, bucket: sb.bucket, skip: []string{DefaultResultsPrefix},
		log: zerolog.New(&logs), lockTTL: time.Minute, owner: "test"}
	e := &scheduleEntry{Name: "nightly", Spec: "0 2 * * *", Prefix: "selfies/", Threshold: 0.7}
	slot := time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)
	id := slotBatchID(e.Name, slot)

	s.fire(sb.ctx, e, slot)
	sum, err := sb.store.Batch(sb.ctx, id)
	require.NoError(t, err)
	require.Equal(t, int64(len(sb.keys)), sum.Enqueued, "every selfie under the prefix, no result JSON")
	require.True(t, sum.EnqueueDone)
	require.Equal(t, 0.7, sum.Info.Threshold)

	s.fire(sb.ctx, e, slot) // the lock holds: nothing happens
	require.Contains(t, logs.String(), "schedule slot taken by another scheduler")

	require.NoError(t, rdb.Del(sb.ctx, slotLockKey(e.Name, slot)).Err())
	s.fire(sb.ctx, e, slot) // no lock: the listing runs again, every task is a duplicate
	sum, err = sb.store.Batch(sb.ctx, id)
	require.NoError(t, err)
	require.Equal(t, int64(len(sb.keys)), sum.Enqueued)
	require.Equal(t, int64(len(sb.keys)), sum.Duplicates)

	info, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo("sched-test")
	require.NoError(t, err)
	require.Equal(t, len(sb.keys), info.Pending, "one task per selfie")
	ttl, err := rdb.TTL(sb.ctx, slotLockKey(e.Name, slot)).Result()
	require.NoError(t, err)
	require.Greater(t, ttl, time.Duration(0), "the slot lock expires")
}

// Two scheduler processes on a per-second spec: every slot becomes exactly one batch,
// fired by one of them, and the queue holds one task per selfie per batch.
func TestScheduleTwoSchedulersFireEachSlotOnce(t *testing.T) {
	sb := opsSetup(t, 4)
	bin := buildBinary(t)
	env := append(sb.env(), "LIVENESSQ_LOG_FORMAT=json", "LIVENESSQ_QUEUE=sched-two")
	args := []string{"schedule", "--every", "*/1 * * * * *=selfies/", "--threshold", "0.75"}
	a := startCmd(t, bin, env, args...)
	b := startCmd(t, bin, env, args...)

	// Wait for at least 3 complete batches.
	deadline := time.Now().Add(30 * time.Second)
	var sums []results.BatchSummary
	for {
		var err error
		sums, err = sb.store.Batches(sb.ctx, 0)
		require.NoError(t, err)
		complete := 0
		for _, s := range sums {
			if s.EnqueueDone {
				complete++
			}
		}
		if complete >= 3 {
			break
		}
		require.Truef(t, time.Now().Before(deadline), "3 scheduled batches within 30s; have %d\nscheduler a:\n%s\nscheduler b:\n%s",
			len(sums), a.stderr(), b.stderr())
		time.Sleep(100 * time.Millisecond)
	}
	codeA, codeB := a.stop(), b.stop()
	require.Equal(t, 0, codeA, a.stderr())
	require.Equal(t, 0, codeB, b.stderr())

	// Each firing is logged by the scheduler that won the slot's lock; the other logs that
	// the slot was taken.
	fired := map[string]int{}
	taken := 0
	for _, out := range []string{a.stderr(), b.stderr()} {
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			var ev struct {
				Message string `json:"message"`
				BatchID string `json:"batch_id"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				continue
			}
			switch ev.Message {
			case "schedule fired":
				fired[ev.BatchID]++
			case "schedule slot taken by another scheduler":
				taken++
			}
		}
	}

	sums, err := sb.store.Batches(sb.ctx, 0)
	require.NoError(t, err)
	var tasks int64
	for _, s := range sums {
		require.Truef(t, strings.HasPrefix(s.Info.ID, "sched-selfies-"), "batch %s", s.Info.ID)
		slot, err := time.Parse("20060102T150405Z", strings.TrimPrefix(s.Info.ID, "sched-selfies-"))
		require.NoErrorf(t, err, "batch %s names its slot", s.Info.ID)
		require.Zero(t, slot.Nanosecond())
		require.Equalf(t, 1, fired[s.Info.ID], "batch %s fired once", s.Info.ID)
		require.Equal(t, 0.75, s.Info.Threshold)
		require.Zerof(t, s.Duplicates, "batch %s: the slot was listed once", s.Info.ID)
		if s.EnqueueDone {
			require.Equal(t, int64(len(sb.keys)), s.Enqueued, s.Info.ID)
		}
		tasks += s.Enqueued
	}
	require.Len(t, fired, len(sums), "every firing made a batch")
	info, err := asynq.NewInspectorFromRedisClient(sb.rdb).GetQueueInfo("sched-two")
	require.NoError(t, err)
	require.Equal(t, tasks, int64(info.Pending), "one task per selfie per slot, no duplicates")
	require.Positive(t, taken, "the second scheduler saw slots taken")
}
