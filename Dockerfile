# syntax=docker/dockerfile:1
# livenessq: one static binary in a distroless, non-root image.
#
#   docker build -t livenessq .
#   docker run --rm livenessq --help
#
# Build stage: a static binary (no cgo), reproducible paths, no symbol tables.
FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so that a code change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w" -o /out/livenessq ./cmd/livenessq

# Final stage: the binary alone, CA certificates and time zones included (the binary
# embeds its own zone database too), running as the distroless "nonroot" user (65532).
FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/livenessq /livenessq
USER nonroot:nonroot
# Metrics, health and the HTTP API (worker, serve); the emulator listens where told.
EXPOSE 9090
ENTRYPOINT ["/livenessq"]
CMD ["--help"]
