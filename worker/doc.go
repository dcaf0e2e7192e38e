// Package worker processes liveness-verification tasks from the asynq queue: it fetches
// each selfie from storage, checks its header before any paid call, calls the Kairos API
// under the global API budget, and writes the result.
//
// The global API budget ([Budget]) lives in Redis and is shared by every worker process
// on every host: a rate limit (a GCRA and a log of when the last calls left), a cap on calls in flight held as self-expiring
// leases, a usage-limit cooldown with a single probe call, and optional daily quota
// pacing. Every call to the API goes through [Budget.Acquire] and [Lease.Release].
package worker
