package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/livenessq/livenessq/worker"
)

func init() {
	register(&command{
		name:    "pause",
		summary: "pause processing across all workers (running tasks finish, no new ones start)",
		run:     runPause,
	})
	register(&command{
		name:    "resume",
		summary: "resume processing and clear the API budget's pause record and cooldown",
		run:     runResume,
	})
}

// pauseRecordKey names the hash recording who paused queue and why, while `livenessq
// pause` holds it paused: fields reason, at (RFC 3339, UTC) and by (user@host).
func pauseRecordKey(queue string) string { return "livenessq:{queue:" + queue + "}:pause" }

// asynqPausedKey is the key asynq sets while queue is paused (asynq's own name).
func asynqPausedKey(queue string) string { return "asynq:{" + queue + "}:paused" }

// pauseRecord is an operator's pause of one queue.
type pauseRecord struct {
	Reason string
	At     time.Time
	By     string
}

func runPause(ctx context.Context, env *environ, args []string) error {
	var c common
	var reason string
	fs := newFlagSet(env, "pause", "[--reason TEXT]")
	c.registerConnection(fs)
	fs.StringVar(&reason, "reason", "paused by an operator", "why, shown by `livenessq status` until resume")
	fs.bindEnv("reason", "LIVENESSQ_PAUSE_REASON")
	if err := fs.parseNoArgs(args, " (quote a --reason with spaces)"); err != nil {
		return err
	}
	queues, rdb, err := c.openQueues(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	for _, q := range queues {
		already, err := pauseQueue(ctx, rdb, insp, q, reason, operatorName(env))
		if err != nil {
			return err
		}
		if already {
			fmt.Fprintf(env.stdout, "queue %s was already paused; reason recorded: %s\n", q, reason)
		} else {
			fmt.Fprintf(env.stdout, "paused queue %s: running tasks finish, no new task starts on any worker until `livenessq resume`\n", q)
		}
	}
	return nil
}

func runResume(ctx context.Context, env *environ, args []string) error {
	var c common
	fs := newFlagSet(env, "resume", "")
	c.registerConnection(fs)
	if err := fs.parseNoArgs(args, ""); err != nil {
		return err
	}
	queues, rdb, err := c.openQueues(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	for _, q := range queues {
		was, err := resumeQueue(ctx, rdb, insp, q)
		if err != nil {
			return err
		}
		if was {
			fmt.Fprintf(env.stdout, "resumed queue %s: workers take tasks again\n", q)
		} else {
			fmt.Fprintf(env.stdout, "queue %s was not paused\n", q)
		}
	}
	st, err := worker.ReadBudgetState(ctx, rdb)
	if err != nil {
		return err
	}
	if err := worker.ResumeBudget(ctx, rdb); err != nil {
		return err
	}
	switch {
	case st.Paused:
		fmt.Fprintf(env.stdout, "cleared the API budget's pause (%s) and its cooldown: the next call tests the API afresh\n", st.PauseReason)
	case st.Cooling:
		fmt.Fprintln(env.stdout, "cleared the API budget's usage-limit cooldown: the next call tests the API afresh")
	default:
		fmt.Fprintln(env.stdout, "the API budget had no pause or cooldown")
	}
	return nil
}

// pauseQueue pauses queue for every worker and records reason and by. It reports whether
// the queue was paused already (then only the record is updated).
func pauseQueue(ctx context.Context, rdb redis.UniversalClient, insp *asynq.Inspector, queue, reason, by string) (already bool, err error) {
	if err := rdb.HSet(ctx, pauseRecordKey(queue),
		"reason", reason, "at", time.Now().UTC().Format(time.RFC3339), "by", by).Err(); err != nil {
		return false, fmt.Errorf("record the pause of queue %q: %w", queue, err)
	}
	if err := insp.PauseQueue(queue); err != nil {
		if paused, perr := queuePaused(ctx, rdb, queue); perr == nil && paused {
			return true, nil
		}
		return false, fmt.Errorf("pause queue %q: %w", queue, err)
	}
	return false, nil
}

// resumeQueue unpauses queue and removes the operator's pause record. It reports whether
// the queue was paused.
func resumeQueue(ctx context.Context, rdb redis.UniversalClient, insp *asynq.Inspector, queue string) (was bool, err error) {
	if err := rdb.Del(ctx, pauseRecordKey(queue)).Err(); err != nil {
		return false, fmt.Errorf("remove the pause record of queue %q: %w", queue, err)
	}
	if err := insp.UnpauseQueue(queue); err != nil {
		if paused, perr := queuePaused(ctx, rdb, queue); perr == nil && !paused {
			return false, nil
		}
		return false, fmt.Errorf("resume queue %q: %w", queue, err)
	}
	return true, nil
}

// queuePaused reports whether asynq holds queue paused.
func queuePaused(ctx context.Context, rdb redis.UniversalClient, queue string) (bool, error) {
	n, err := rdb.Exists(ctx, asynqPausedKey(queue)).Result()
	if err != nil {
		return false, fmt.Errorf("read the pause state of queue %q: %w", queue, err)
	}
	return n > 0, nil
}

// readPauseRecord returns the operator's pause record of queue, or nil when there is none.
func readPauseRecord(ctx context.Context, rdb redis.UniversalClient, queue string) (*pauseRecord, error) {
	m, err := rdb.HGetAll(ctx, pauseRecordKey(queue)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read the pause record of queue %q: %w", queue, err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	r := &pauseRecord{Reason: m["reason"], By: m["by"]}
	r.At, _ = time.Parse(time.RFC3339, m["at"])
	return r, nil
}

// operatorName says who runs the command, for the pause record: user@host as far as
// the environment tells.
func operatorName(env *environ) string {
	u := env.getenv("USER")
	if u == "" {
		u = env.getenv("LOGNAME")
	}
	h, _ := os.Hostname()
	switch {
	case u != "" && h != "":
		return u + "@" + h
	case h != "":
		return h
	default:
		return strings.TrimSpace(u)
	}
}
