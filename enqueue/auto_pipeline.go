package enqueue

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// autoPipeline is a redis.UniversalClient that sends the EVALSHA commands of concurrent
// callers to Redis together, a pipeline at a time, and everything else straight through.
//
// asynq enqueues a task with one EVALSHA (its enqueue script) per call. With InFlight
// goroutines enqueueing at once, sending their scripts in pipelines costs Redis and this
// process one read and one write system call per batch rather than per task, which is
// what makes concurrent enqueueing several times faster than a loop on a small machine.
// Each command still gets its own reply, so asynq sees exactly what it would see
// without the pipeline (a task id conflict, a NOSCRIPT error that it answers with EVAL).
//
// It lives for one enqueue run: start it, hand it to asynq.NewClientFromRedisClient, and
// stop it once no caller is left.
type autoPipeline struct {
	redis.UniversalClient
	calls chan *pipelinedCall
	wg    sync.WaitGroup
}

// pipelinedCall is one EVALSHA waiting for its reply.
type pipelinedCall struct {
	ctx  context.Context
	sha  string
	keys []string
	args []any
	cmd  *redis.Cmd
	done chan struct{}
}

// maxPipeline caps the commands sent in one pipeline.
const maxPipeline = 256

// startAutoPipeline returns an autoPipeline over c with senders goroutines, each sending
// one pipeline at a time.
func startAutoPipeline(c redis.UniversalClient, senders int) *autoPipeline {
	p := &autoPipeline{UniversalClient: c, calls: make(chan *pipelinedCall, maxPipeline)}
	for range max(senders, 1) {
		p.wg.Go(p.send)
	}
	return p
}

// stop ends the senders after the calls already queued; no EvalSha may follow.
func (p *autoPipeline) stop() {
	close(p.calls)
	p.wg.Wait()
}

// EvalSha queues the command for the next pipeline and waits for its reply.
func (p *autoPipeline) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	call := &pipelinedCall{ctx: ctx, sha: sha, keys: keys, args: args, done: make(chan struct{})}
	select {
	case p.calls <- call:
	case <-ctx.Done():
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(ctx.Err())
		return cmd
	}
	<-call.done // a sender always answers: Exec returns when ctx ends
	return call.cmd
}

// send sends the queued calls in pipelines until the channel closes.
func (p *autoPipeline) send() {
	batch := make([]*pipelinedCall, 0, maxPipeline)
	for first := range p.calls {
		batch = append(batch[:0], first)
	fill:
		for len(batch) < maxPipeline {
			select {
			case c, ok := <-p.calls:
				if !ok {
					break fill
				}
				batch = append(batch, c)
			default:
				break fill
			}
		}
		pipe := p.UniversalClient.Pipeline()
		for _, c := range batch {
			c.cmd = pipe.EvalSha(c.ctx, c.sha, c.keys, c.args...)
		}
		// Every command carries its own result or error; Exec's error is the first of
		// them. Commands of one run share its context.
		_, _ = pipe.Exec(first.ctx)
		for _, c := range batch {
			close(c.done)
		}
	}
}
