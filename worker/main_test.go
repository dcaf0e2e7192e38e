package worker

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: budgets, servers
// and clients started by a test must be stopped by it (t.Cleanup).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
