// Package kairos is the client of the Kairos liveness-verification API
// (POST {BaseURL} with a multipart selfie and a threshold), as specified by the project's
// contract page KAIROS_API.md.
//
// A Client sends one selfie per Verify call. The multipart body is streamed from the
// selfie's reader with an exact Content-Length computed in advance, so the image is never
// held in memory. The answer is either a *Result (zero faces is a result, not an error) or
// an error that callers classify with errors.Is against the package's sentinels:
//
//	ErrUsageLimit       403: a usage limit was reached (a state of the whole service)
//	ErrUnauthorized     401 and the other 4xx not listed here: bad credentials or a misconfigured endpoint
//	ErrRateLimited      429, with Retry-After when the server sent one
//	ErrRejected         400, 413, 415, 422: the API refused this image; sending it again will not help
//	ErrServer           5xx (and 408), with the status and Retry-After
//	ErrBadResponse      a 200 whose body is not the documented JSON, or an unexpected status
//	ErrTransport        no answer: connection failures, resets, timeouts
//	ErrSelfieRead       reading the selfie failed mid-request, or it was not Selfie.Size bytes long
//	ErrInvalidThreshold a threshold outside [0, 1] or NaN (no request is made)
//	ErrInvalidSelfie    a selfie that cannot be sent (no body, negative size, bad content type)
//
// Answers with a status code are also an *APIError (errors.As) carrying the status, the
// Retry-After delay, the server's message and the X-Request-ID. IsRetryable is the one
// place that says whether an error may succeed when the same request is sent again;
// RetryAfter returns the server's requested delay.
//
// Secrets: the app key is sent only in its request header. It never appears in an error
// string, and Config redacts it whenever it is printed or marshalled.
//
// The package kairos/kairostest holds an emulator of the API for tests and load runs.
package kairos
