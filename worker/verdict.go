package worker

import (
	"context"
	"encoding/json"
	"time"

	"github.com/livenessq/livenessq/kairos"
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

// retireVerdict shortens the life of a verdict whose result has been written to
// verdictKeepAfterResult.
func (w *Worker) retireVerdict(ctx context.Context, taskID string) {
	if taskID == "" {
		return
	}
	_ = w.cfg.Redis.Expire(context.WithoutCancel(ctx), verdictKey(taskID), verdictKeepAfterResult).Err()
}
