package worker

import (
	"context"
	"encoding/json"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/livenessq/livenessq/kairos"
	"github.com/livenessq/livenessq/results"
)

// verdict is an API answer kept in Redis between the paid call and the written result,
// so that an attempt that fails after paying (a storage outage while writing, a worker
// killed before the ack) does not pay again: the next attempt of the same task reuses it
// when the object's ETag is unchanged.
type verdict struct {
	ETag   string        `json:"etag"`
	Result kairos.Result `json:"result"`
}

// verdictTTL bounds how long an unused verdict is kept: longer than any retry schedule.
const verdictTTL = 48 * time.Hour

// verdictKeepAfterResult is how long a verdict is kept once its result is written. asynq
// runs a finished task again when its acknowledgement is lost: the worker was killed
// between the write and the ack, or Redis was unreachable at the ack (asynq v0.26's
// retry of a failed ack reuses a cancelled context, so it never succeeds). The task
// comes back once its lease has expired: 30 s, plus 30 s of clock-skew margin, plus up
// to a minute of asynq's recovery polling. Kept this long, the verdict is written again
// rather than paid for twice.
const verdictKeepAfterResult = 5 * time.Minute

func verdictKey(taskID string) string { return "livenessq:verdict:{" + taskID + "}" }

// saveVerdict keeps v for the task's next attempt, even if ctx is canceled: a write that
// failed may not have stored it.
func (w *Worker) saveVerdict(ctx context.Context, taskID string, v *verdict) {
	if taskID == "" {
		return
	}
	b, err := json.Marshal(v)
	if err == nil {
		err = w.cfg.Redis.Set(context.WithoutCancel(ctx), verdictKey(taskID), b, verdictTTL).Err()
	}
	if err != nil {
		w.log.Warn().Err(err).Str("task_id", taskID).Msg("keep verdict for retries")
	}
}

func (w *Worker) loadVerdict(ctx context.Context, taskID string) *verdict {
	if taskID == "" {
		return nil
	}
	b, err := w.cfg.Redis.Get(ctx, verdictKey(taskID)).Bytes()
	if err != nil {
		return nil
	}
	var v verdict
	if json.Unmarshal(b, &v) != nil {
		return nil
	}
	return &v
}

// verdictCommands returns the write option that keeps tk's verdict in Redis alongside its
// result, at no extra round trip: a verdict this attempt paid for is stored (for
// verdictTTL) while the result goes to storage, and before it is recorded, so that a
// failed write or a crash does not pay again; once the result is recorded, the verdict
// is kept only verdictKeepAfterResult, for a redelivery of the finished task.
func (w *Worker) verdictCommands(ctx context.Context, tk *task) results.WriteOption {
	if tk.id == "" || tk.verdict == nil {
		return results.WithRedis(nil, nil)
	}
	key := verdictKey(tk.id)
	var before func(redis.Pipeliner)
	if tk.paid {
		b, err := json.Marshal(tk.verdict)
		if err != nil {
			w.log.Warn().Err(err).Str("task_id", tk.id).Msg("keep verdict for retries")
		} else {
			before = func(pipe redis.Pipeliner) { pipe.Set(ctx, key, b, verdictTTL) }
		}
	}
	return results.WithRedis(before, func(pipe redis.Pipeliner) { pipe.Expire(ctx, key, verdictKeepAfterResult) })
}
