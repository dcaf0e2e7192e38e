package enqueue

import (
	"fmt"
	"testing"
)

func BenchmarkZZTune(b *testing.B) {
	for _, inflight := range []int{16, 32, 64, 128} {
		for _, senders := range []int{1, 2, 4} {
			b.Run(fmt.Sprintf("in%d-s%d", inflight, senders), func(b *testing.B) {
				tb := setup(b)
				tb.client.inFlight, tb.client.senders = inflight, senders
				b.ResetTimer()
				concurrently(b, tb, "t", 0, b.N, nil)
			})
		}
	}
}
