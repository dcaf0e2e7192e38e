// Package kairostest is an emulator of the Kairos liveness-verification API, for tests,
// local runs (`livenessq emulator`, `livenessq run`) and load tests. An *Emulator is an
// http.Handler; serve it with httptest.NewServer or any http.Server.
//
// # The API path
//
// Every path except those under /_emulator/ is the API (the base URL may carry
// /v0.2/liveness-verification or anything else). It behaves as the contract page
// KAIROS_API.md describes, checking in this order:
//
//  1. the method is POST, else 405 (with Allow: POST);
//  2. the credentials, in either spelling (app-id/app-key or app_id/app_key): missing or
//     wrong → Config.AuthFailureStatus (401, or 403). The key is compared in constant time;
//  3. outages (Config.Outages, Faults.OutageFor) → 503;
//  4. the concurrency cap (Config.MaxConcurrent) → 429 (our choice: the cap is a traffic
//     limit, and 429 is its status; Kairos documents none);
//  5. usage limits: Faults.UsageLimitFor, then Config.RateLimit (at most N admitted
//     requests in any sliding 1-second window), then Config.QuotaTotal per
//     Config.QuotaPeriod → 403; denied requests do not count against either limit;
//  6. the injected error rate (Config.ErrorRate, Faults.ErrorRate) → 503;
//  7. the body: multipart/form-data (else 400) no larger than Config.MaxBodyBytes (else
//     413); threshold missing, not a number or outside [0, 1] → 400; selfie part missing →
//     400; not JPEG or PNG by its leading bytes → 415; an unreadable header → 400; a width
//     or height outside 300..5000 px → 400 with a message saying so. Only the image header
//     is decoded; the bytes are hashed as they stream and never held;
//  8. the first Rule whose Pattern matches the selfie's file name (path.Match) may force a
//     status, a score or "no face";
//  9. Config.Latency plus a random share of Config.LatencyJitter is waited (on every answer
//     from step 7 on);
//  10. 200 with the documented JSON: api_req_uid, processed_at and requested_at
//     ("YYYY-MM-DD HH:MM:SS", UTC), response_code 2, response_data {faces_liveness,
//     faces_predicted [{confidence, delta {x, y}, top_left {x, y}}], img {height, width}},
//     floats with four decimals. The score is derived from the SHA-256 of the image bytes,
//     so the same image always gets the same score; the face box is plausible for the
//     image size.
//
// Every answer carries Content-Type: application/json, Content-Length, a unique
// X-Request-ID, X-Content-Type-Options: nosniff, X-Frame-Options: DENY and
// Strict-Transport-Security: max-age=86400; includeSubDomains; 5xx, 403 and 429 answers
// carry Retry-After when Config.RetryAfter > 0. Before answering an error the emulator
// reads and discards the rest of the request body (up to 64 MiB), so a client that is
// still streaming gets the answer rather than a reset.
//
// Error bodies are our choice, since Kairos publishes none:
//
//	{"Errors":[{"Message":"threshold must be a number in [0, 1]","ErrCode":2001}]}
//
// with ErrCode 1001 credentials, 1002 usage limit, 1003 too many concurrent requests,
// 1004 method not allowed, 2001 bad request, 2002 unsupported media type, 2003 body too
// large, 2004 image size out of range, 3001 service unavailable, 3002 a rule's status.
//
// # The admin paths
//
// So that a separately running emulator can be observed and driven by tests, it also
// serves, without authentication (it is a test tool; never expose it):
//
//	GET  /_emulator/stats   the Stats as JSON
//	POST /_emulator/faults  set the runtime faults (JSON Faults, replacing the current ones), 204
//	POST /_emulator/reset   Reset: clear faults, statistics and limit windows, 204
//
// For example {"error_rate":0.5,"for":"15s"}, {"usage_limit_for":"20s"},
// {"outage_for":"10s"}, {"app_key":"wrong"}; {} clears all faults.
//
// # Test images
//
// JPEG, PNG and JPEGSized make deterministic test images of a given size.
package kairostest
