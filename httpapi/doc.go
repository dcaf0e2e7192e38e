// Package httpapi is livenessq's HTTP API for services that do not speak asynq: a small,
// authenticated JSON API over the same enqueue and results packages the command line
// uses, and the completion webhooks of batches.
//
// # Routes
//
// The routes are listed once, in Routes, which both registers them on the server's
// http.ServeMux and is checked by a test against the OpenAPI 3 document kept in this
// package (openapi.json, served at /v1/openapi.json):
//
//	POST /v1/verifications           enqueue one key; ?wait=10s waits for its result
//	POST /v1/batches                 enqueue {keys}, {prefix} or a JSONL body of keys
//	GET  /v1/batches/{id}            a batch's summary and callback delivery state
//	GET  /v1/batches/{id}/results    a batch's results, streamed as JSONL (or CSV)
//	GET  /v1/results/{key...}        the latest result of a key
//	GET  /v1/openapi.json            the OpenAPI document (no token needed)
//	GET  /healthz                    Redis reachable (no token needed)
//
// Single verifications that name no batch_id go to the day's batch, "api-YYYYMMDD"
// (UTC). A task's id is derived from its batch, storage and key, so the same key sent
// again on the same day without a batch_id is not verified twice: the call returns the
// same task id and, with ?wait, that task's result. Callers that want a fresh
// verification pass a batch_id of their own.
//
// # Security
//
// Every /v1 route but the OpenAPI document needs a bearer token (Tokens, parsed from
// LIVENESSQ_API_TOKENS as name:token pairs). Tokens are compared in constant time, and
// only their names reach logs. Requests are rate limited per token in Redis, so the
// limit holds across replicas; bodies are capped (413); keys are checked (no empty key,
// no "." or ".." segment, at most enqueue.MaxKeyLen bytes); errors have one JSON shape,
// {"error": {"code": "...", "message": "..."}}, whose codes are the Code* constants.
//
// Callback URLs must be http(s) and, unless private addresses are allowed, must not
// resolve to loopback, private, link-local, unspecified, multicast or otherwise
// reserved addresses. The check is made when the batch is created and again on every
// connection the Dispatcher opens (a net.Dialer Control hook, so DNS rebinding cannot
// reach the internal network); redirects are never followed.
//
// # Completion webhooks, delivered once
//
// A batch created with a callback_url joins a Redis set of batches with a pending
// callback (PendingCallbacksKey); batches other producers create with a CallbackURL
// (`livenessq enqueue --callback-url`, Go services using the enqueue package) are found
// in the batch index and added to it (MarkCallbackPending). Any number of Dispatchers
// (one per `livenessq serve`, optionally one per worker) scan that set. When a batch is complete, a Dispatcher
// claims its delivery with a Lua script on the batch's meta hash that moves the
// callback_state from pending to delivering under a lease (times from Redis's clock),
// counting the attempt; only the claimant POSTs the summary, signed with
// X-Livenessq-Signature: sha256=<hex HMAC-SHA256 of the body> (see Sign). A 2xx
// answer marks the callback delivered; any other answer, a network error or a timeout
// schedules the next attempt with exponential backoff, until MaxAttempts, then it is
// failed. A claim whose lease ran out (its Dispatcher died) is taken over by another.
// The state, attempts, last status and error are part of the batch summary.
//
// So a receiver is called once per batch with a 2xx, except when a Dispatcher dies
// between the receiver's 2xx and recording it: then it is called again. Receivers
// that must not act twice deduplicate on the batch id (X-Livenessq-Batch).
package httpapi
