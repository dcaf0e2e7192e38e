package storage_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind (a Bucket not closed keeps HTTP
// connections, and their goroutines, alive).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
