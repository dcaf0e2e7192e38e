// Package enqueue turns keys into liveness verification tasks on asynq: the task type and
// its payload, the sources keys come from, and the Client that enqueues them in batches.
//
// # Tasks
//
// A task of type TaskType ("liveness:verify") carries a small, versioned JSON Payload:
// the storage location (a storage.Bucket's URL, never with credentials), the object key,
// the liveness threshold, the batch id and the time it was enqueued; never image bytes.
// NewVerifyTask builds one after validating it; ParsePayload, which the worker calls,
// reads one strictly and wraps every error in ErrBadPayload. A threshold outside [0, 1],
// or NaN, is refused with a message such as "threshold must be a number in [0, 1], got
// 2" (ValidateThreshold).
//
// # Sources
//
// A Source yields Items (key, optional threshold, line) one at a time, so that memory
// stays flat however many keys there are: Keys (a list), KeysReader (one key a line: a
// file or stdin), Manifest (CSV with a header naming a "key" and optionally a "threshold"
// column, or JSONL objects with the same fields) and Prefix (a storage listing, streamed
// page by page so that listing and enqueueing overlap). Blank lines are skipped. A
// malformed row is a *RowError with its line number: it is counted and reported, and the
// rows after it are still enqueued. Any other error (the reader or the listing failed)
// ends the source.
//
// # Batches and idempotence
//
// Every run of Client.Enqueue belongs to a batch, given or generated, recorded through a
// BatchRecorder (a *results.Store) with its source, storage, threshold, creation time and
// counters: tasks enqueued, tasks already there, malformed rows. The counters are updated
// as the run goes, every 500 tasks or 250 ms, and at its end; the batch is marked fully
// enqueued only when the source ended without a fatal error.
//
// The asynq task id is TaskID(batch, storage, key), a hash of the three. Re-running an
// enqueue with the same batch id, or resuming one that was interrupted or crashed, finds
// the tasks it already made (asynq answers ErrTaskIDConflict), adds none twice and counts
// them as duplicates; the same key in a new batch is a new task. This holds as long as
// asynq keeps the task: while it is pending, running, retrying or archived, and after it
// completes for Config.Retention (24 hours by default). After a crash (not a cancelled
// context, whose counts are recorded), the tasks of the last, unrecorded, counter update
// (at most 500 tasks or 250 ms' worth) are counted as duplicates by the re-run rather
// than as enqueued.
//
// # Speed
//
// Client.Enqueue keeps Config.InFlight enqueues in flight (32 by default) and sends their
// asynq enqueue scripts to Redis in pipelines, so that a run costs a fraction of the
// round trips and system calls of a loop calling asynq's Enqueue one task at a time. Its
// memory does not grow with the number of keys. EnqueueOne, for single verifications
// (the HTTP API uses it), goes through the same code.
package enqueue
