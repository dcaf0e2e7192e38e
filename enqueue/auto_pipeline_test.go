package enqueue

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/internal/testenv"
)

func TestAutoPipeline(t *testing.T) {
	rdb := testenv.Redis(t, testenv.DBEnqueue)
	ctx := context.Background()
	p := startAutoPipeline(rdb, 2)
	defer p.stop()

	// A script Redis has never seen: the first EVALSHA gets NOSCRIPT through the pipeline
	// and Script.Run falls back to EVAL, as asynq's calls do.
	script := redis.NewScript(fmt.Sprintf(`
-- %d
if ARGV[1] == 'fail' then return redis.error_reply('asked to fail') end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]`, time.Now().UnixNano()))

	const n = 500
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			arg := fmt.Sprint(i)
			if i%7 == 0 {
				arg = "fail"
			}
			got, err := script.Run(ctx, p, []string{fmt.Sprintf("ap:%d", i)}, arg).Text()
			switch {
			case arg == "fail" && (err == nil || err.Error() != "asked to fail"):
				errs <- fmt.Errorf("call %d: err %v, want its own error", i, err)
			case arg != "fail" && (err != nil || got != arg):
				errs <- fmt.Errorf("call %d: %q, %v; want its own reply", i, got, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range n {
		v, err := rdb.Get(ctx, fmt.Sprintf("ap:%d", i)).Result()
		if i%7 == 0 {
			require.ErrorIs(t, err, redis.Nil)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, fmt.Sprint(i), v)
	}

	// Other commands go straight through.
	require.NoError(t, p.Set(ctx, "ap:direct", "x", 0).Err())

	// A call whose context has ended returns its error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, p.EvalSha(cctx, script.Hash(), []string{"ap:c"}, "1").Err(), context.Canceled)
}
