package main

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/worker"
)

func TestPauseResume(t *testing.T) {
	ob := opsSetup(t, 0)
	bin := buildBinary(t)
	queue := func() map[string]any {
		return statusJSON(t, bin, ob)["queues"].([]any)[0].(map[string]any)
	}

	r := runCmd(t, bin, ob.env(), "pause", "--reason", "maintenance window")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "paused queue liveness")
	q := queue()
	require.Equal(t, true, q["paused"])
	require.Equal(t, "operator", q["pause_source"])
	require.Equal(t, "maintenance window", q["pause_reason"])
	require.NotEmpty(t, q["paused_at"])
	paused, err := queuePaused(ob.ctx, ob.rdb, "liveness")
	require.NoError(t, err)
	require.True(t, paused, "asynq holds the queue paused")

	r = runCmd(t, bin, ob.env(), "status")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "Queue liveness is PAUSED by operator")
	require.Contains(t, r.stdout, ": maintenance window\n")

	r = runCmd(t, bin, ob.env(), "pause")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "queue liveness was already paused")

	r = runCmd(t, bin, ob.env(), "resume")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "resumed queue liveness")
	require.Contains(t, r.stdout, "the API budget had no pause or cooldown")
	q = queue()
	require.Equal(t, false, q["paused"])
	require.NotContains(t, q, "pause_reason")
	n, err := ob.rdb.Exists(ob.ctx, pauseRecordKey("liveness")).Result()
	require.NoError(t, err)
	require.Zero(t, n, "resume removes the pause record")

	r = runCmd(t, bin, ob.env(), "resume")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "queue liveness was not paused")

	// Several queues at once.
	r = runCmd(t, bin, ob.env(), "pause", "--queue", "a,b")
	require.Equal(t, 0, r.code, r.stderr)
	for _, name := range []string{"a", "b"} {
		paused, err := queuePaused(ob.ctx, ob.rdb, name)
		require.NoError(t, err)
		require.True(t, paused, name)
	}
	r = runCmd(t, bin, ob.env(), "pause", "extra")
	require.Equal(t, 2, r.code)
	r = runCmd(t, bin, []string{"LIVENESSQ_REDIS_URL=ftp://x"}, "resume")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "--redis")
}

// A usage-limit cooldown, then a pause by persistent 403s, as a real Budget records them:
// status shows both, and resume clears them and unpauses the queue.
func TestResumeClearsBudgetCooldownAndPause(t *testing.T) {
	ob := opsSetup(t, 0)
	bin := buildBinary(t)
	ctx := ob.ctx
	insp := asynq.NewInspectorFromRedisClient(ob.rdb)

	// A cooldown of an hour after one 403.
	b, err := worker.NewBudget(worker.BudgetConfig{Redis: ob.rdb, Cooldown: time.Hour, CooldownMax: time.Hour})
	require.NoError(t, err)
	l, err := b.Acquire(ctx)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx, worker.OutcomeUsageLimited))
	budget := statusJSON(t, bin, ob)["budget"].(map[string]any)
	require.Equal(t, true, budget["cooling"])
	require.Greater(t, budget["cooldown_seconds_left"].(float64), 3000.0)
	r := runCmd(t, bin, ob.env(), "status")
	require.Contains(t, r.stdout, "usage-limit COOLDOWN until")

	r = runCmd(t, bin, ob.env(), "resume")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "cleared the API budget's usage-limit cooldown")
	st, err := worker.ReadBudgetState(ctx, ob.rdb)
	require.NoError(t, err)
	require.False(t, st.Cooling)

	// 403s that persist past PauseAfter pause the queue, with a reason.
	b, err = worker.NewBudget(worker.BudgetConfig{Redis: ob.rdb, Cooldown: 5 * time.Millisecond, CooldownMax: 5 * time.Millisecond,
		PauseAfter: 30 * time.Millisecond, Pause: func(context.Context, string) error { return insp.PauseQueue("liveness") }})
	require.NoError(t, err)
	eventually(t, 20*time.Second, func() bool {
		l, err := b.Acquire(ctx)
		require.NoError(t, err)
		require.NoError(t, l.Release(ctx, worker.OutcomeUsageLimited))
		st, err := worker.ReadBudgetState(ctx, ob.rdb)
		require.NoError(t, err)
		return st.Paused
	}, "persistent 403s pause the budget")

	doc := statusJSON(t, bin, ob)
	q := doc["queues"].([]any)[0].(map[string]any)
	require.Equal(t, true, q["paused"])
	require.Equal(t, "budget", q["pause_source"])
	require.Contains(t, q["pause_reason"], "403")
	require.Equal(t, true, doc["budget"].(map[string]any)["paused"])

	r = runCmd(t, bin, ob.env(), "resume")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "resumed queue liveness")
	require.Contains(t, r.stdout, "cleared the API budget's pause (")
	st, err = worker.ReadBudgetState(ctx, ob.rdb)
	require.NoError(t, err)
	require.False(t, st.Paused)
	require.False(t, st.Cooling)
	paused, err := queuePaused(ctx, ob.rdb, "liveness")
	require.NoError(t, err)
	require.False(t, paused)
}
