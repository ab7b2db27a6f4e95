# rarp-announce
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
PKG      := github.com/rarp-announce/rarp-announce
LDFLAGS  := -s -w -X $(PKG)/internal/version.Version=$(VERSION) -X $(PKG)/internal/version.Revision=$(REVISION)
BIN      := bin/rarp-announce
export PATH := $(PATH):/usr/local/go/bin

.PHONY: build test test-fast bench clean

build: $(BIN)

$(BIN): FORCE
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/rarp-announce

FORCE:

# The test command of README.md and .ci/run; run it as root.
test:
	./scripts/test.sh

test-fast:
	FAST=1 ./scripts/test.sh

bench:
	go test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin dist
