.PHONY: test build vet fmt bench

build:
	go build -o bin/livenessq ./cmd/livenessq

test:
	bash scripts/test.sh

vet:
	go vet ./...

fmt:
	gofmt -l -w .

bench:
	go run ./cmd/livenessq bench
