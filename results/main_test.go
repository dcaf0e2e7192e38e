package results

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind (writers, exports, clients).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
