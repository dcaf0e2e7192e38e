package worker

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestBudgetZZMulti(t *testing.T) {
	addr := os.Getenv("LIVENESSQ_TEST_REDIS_ADDR")
	if os.Getenv("BUDGET_CHILD") != "" {
		rdb := redis.NewClient(&redis.Options{Addr: addr, DB: 7})
		defer rdb.Close()
		b, _ := NewBudget(BudgetConfig{Redis: rdb, Rate: 200, MaxInFlight: 64, LeaseTTL: 2 * time.Second, Headroom: hr()})
		b.Start(context.Background())
		defer b.Shutdown(context.Background())
		var lmu sync.Mutex
		var late []time.Duration
		var rtts []time.Duration
		budgetDebugHook = func(a budgetAttempt, target time.Time) {
			if !target.IsZero() {
				lmu.Lock()
				late = append(late, a.now.Sub(target))
				lmu.Unlock()
			}
		}
		defer func() {
			slices.Sort(late)
			if len(late) > 0 {
				fmt.Fprintf(os.Stderr, "late n=%d p50=%v p90=%v p99=%v max=%v\n", len(late), late[len(late)/2], late[len(late)*9/10], late[len(late)*99/100], late[len(late)-1])
			}
			_ = rtts
		}()
		d, _ := time.ParseDuration(os.Getenv("BUDGET_CHILD"))
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		var mu sync.Mutex
		w := bufio.NewWriter(os.Stdout)
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				for {
					l, err := b.Acquire(ctx)
					if err != nil {
						return
					}
					mu.Lock()
					fmt.Fprintf(w, "A %d\n", l.AdmittedAt().UnixMicro())
					w.Flush()
					mu.Unlock()
					time.Sleep(time.Duration(20+rand.IntN(40)) * time.Millisecond)
					l.Release(context.Background(), OutcomeOK)
				}
			})
		}
		wg.Wait()
		return
	}
	if os.Getenv("BUDGET_MULTI") == "" {
		t.Skip()
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, DB: 7})
	rdb.FlushDB(context.Background())
	rdb.Close()
	const run = 20 * time.Second
	var mu sync.Mutex
	var times []int64
	var wg sync.WaitGroup
	var cmds []*exec.Cmd
	for range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=TestBudgetZZMulti$")
		cmd.Env = append(os.Environ(), "BUDGET_CHILD="+run.String())
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		cmd.Start()
		cmds = append(cmds, cmd)
		wg.Go(func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				var us int64
				if _, err := fmt.Sscanf(sc.Text(), "A %d", &us); err == nil {
					mu.Lock()
					times = append(times, us)
					mu.Unlock()
				}
			}
		})
	}
	start := time.Now()
	time.Sleep(run / 2)
	cmds[0].Process.Kill()
	kill := time.Now()
	wg.Wait()
	for _, c := range cmds {
		c.Wait()
	}
	slices.Sort(times)
	first, last := times[0], times[len(times)-1]
	dur := float64(last-first) / 1e6
	var after int
	for _, x := range times {
		if x >= kill.UnixMicro()+1e6 && x < start.Add(run).UnixMicro()-5e5 {
			after++
		}
	}
	afterDur := float64(start.Add(run).UnixMicro()-5e5-kill.UnixMicro()-1e6) / 1e6
	best, j := 0, 0
	for i := range times {
		for j < len(times) && times[j]-times[i] < 1e6 {
			j++
		}
		best = max(best, j-i)
	}
	t.Logf("n=%d rate=%.2f/s (%.4f R) after-kill=%.2f/s max-in-1s=%d", len(times), float64(len(times)-1)/dur, float64(len(times)-1)/dur/200, float64(after)/afterDur, best)
	_ = strconv.Itoa
}

func hr() time.Duration { d, _ := time.ParseDuration(os.Getenv("BUDGET_HR")); return d }
