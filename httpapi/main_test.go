package httpapi_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: servers, workers,
// dispatchers and background listings started by a test must be stopped by it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
