package enqueue

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind (an enqueue worker, the
// counter flusher, a storage connection).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
