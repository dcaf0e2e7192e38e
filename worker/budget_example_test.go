package worker_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/livenessq/livenessq/worker"
)

// Every API call is made between Acquire and Release. Each worker process builds the
// same budget; Redis makes it one.
func ExampleBudget() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer rdb.Close()

	budget, err := worker.NewBudget(worker.BudgetConfig{
		Redis:       rdb,
		Rate:        200, // the API's limit: at most 200 calls in any second, all workers together
		MaxInFlight: 64,
		Pause: func(ctx context.Context, reason string) error {
			fmt.Println("pausing the queue:", reason)
			return nil
		},
	})
	if err != nil {
		panic(err)
	}
	if err := budget.Start(ctx); err != nil {
		panic(err)
	}
	defer budget.Shutdown(ctx)

	callAPI := func(context.Context) (int, error) { return 200, nil } // the paid call

	lease, err := budget.Acquire(ctx) // waits for rate, a free slot, and the end of any cooldown
	if errors.Is(err, worker.ErrBudgetUnavailable) {
		return // Redis is down: make no call; the task is retried later
	} else if err != nil {
		return // ctx ended
	}
	status, err := callAPI(ctx)
	outcome := worker.OutcomeOther
	switch {
	case err == nil:
		outcome = worker.OutcomeOK
	case status == 403:
		outcome = worker.OutcomeUsageLimited // every worker stops until a probe succeeds
	}
	if err := lease.Release(ctx, outcome); err != nil {
		fmt.Println("release:", err)
	}

	st, err := worker.ReadBudgetState(ctx, rdb) // what `livenessq status` shows
	if err == nil {
		fmt.Printf("pace %.1f/s, %d in flight, cooling until %v\n", st.PaceRate, st.InFlight, st.CooldownUntil.Format(time.RFC3339))
	}
}
