// Package results owns the result record of a verification and everything written from
// it: the JSON in storage, the latest result of each key in Redis, and the per-batch
// statistics (counts per status, a 20-bin score histogram, flips against the previous
// result) that status displays, exports and completion callbacks read.
//
// The record's JSON form and the Redis names are contracts (DESIGN.md): Record fixes the
// former, keys.go the latter, and other packages build names only through ResultKey,
// BatchMetaKey and their siblings.
//
// Batch statistics are updated by one Lua script per result on the batch's own Redis
// Cluster slot (the hash tag {batch:ID}). The batch keeps each key's result, so a task
// delivered twice replaces its result and moves its counts rather than counting twice:
// counts always equal the results held, and Export streams them back.
package results
