// Package storagetest is the conformance suite of package storage: one set of tests that
// every driver must pass, run from storage's own tests against the local-directory driver
// and against a real S3-compatible server, in the style of go-cloud's drivertest.
package storagetest
