# rarp-announce
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
PKG      := github.com/rarp-announce/rarp-announce
LDFLAGS  := -s -w -X $(PKG)/internal/version.Version=$(VERSION) -X $(PKG)/internal/version.Revision=$(REVISION)
BIN      := bin/rarp-announce
export PATH := $(PATH):/usr/local/go/bin

.PHONY: build test test-fast test-kernel bench clean image image-full packages

build: $(BIN)

$(BIN): FORCE
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/rarp-announce

FORCE:

# The test command of README.md and .ci/run; run it as root.
test:
	./scripts/test.sh

test-fast:
	FAST=1 ./scripts/test.sh

# The tests that need kernel features the host may lack (files tagged
# "kernelrig"), on Debian's kernel under QEMU: test/kernel/README.md.
test-kernel:
	./test/kernel/run.sh

bench:
	go test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin dist

# Container image (see Dockerfile and docs/deploy.md). "image" builds the
# final stage from the host's binary and pulls nothing; "image-full" builds
# in the builder image (BUILDER_IMAGE, default golang:1.26). Run as root:
# the binary gets file capabilities (FILE_CAPS) before it is copied in.
# --layers=false: buildah 1.28 reuses a cached LABEL layer built with other
# ARG values, and would keep intermediate images.
IMAGE       ?= localhost/rarp-announce:$(VERSION)
FILE_CAPS   ?= cap_net_raw,cap_net_admin
CREATED     ?= $(shell git log -1 --format=%cI 2>/dev/null)
IMAGE_ARGS   = --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) --build-arg CREATED=$(CREATED)

image: $(BIN)
	mkdir -p dist/image
	install -m 0755 $(BIN) dist/image/rarp-announce
	go run ./deploy/container/setfcap dist/image/rarp-announce $(FILE_CAPS)
	podman build --layers=false --target local $(IMAGE_ARGS) -t $(IMAGE) .

# .deb and .rpm into $(DIST) with nfpm (deploy/nfpm.yaml), pinned in
# tools/go.mod so that its dependencies stay out of the agent's module.
DIST        ?= dist
PKG_ARCH    ?= $(shell go env GOARCH)
# A Debian/RPM version from "git describe": v1.2.3 -> 1.2.3,
# v1.2.3-4-gabc -> 1.2.3+4.gabc, an untagged abc123 -> 0.0.0~gitabc123.
PKG_VERSION ?= $(shell echo '$(VERSION)' | sed -E 's/^v//; s/-/+/; s/-/./g; /^[0-9]+\.[0-9]/!s/^/0.0.0~git/')
NFPM        := go tool -modfile=tools/go.mod nfpm

packages: $(BIN)
	mkdir -p $(DIST)/man
	gzip -9n -c deploy/man/rarp-announce.8 > $(DIST)/man/rarp-announce.8.gz
	sed -e 's|$${PKG_BIN}|$(abspath $(BIN))|' -e 's|$${PKG_MAN}|$(abspath $(DIST))/man/rarp-announce.8.gz|' \
		deploy/nfpm.yaml > $(DIST)/nfpm.yaml
	for p in deb rpm; do \
		PKG_VERSION='$(PKG_VERSION)' PKG_ARCH='$(PKG_ARCH)' \
		$(NFPM) package --config $(DIST)/nfpm.yaml --packager $$p --target $(DIST)/ || exit 1; \
	done

image-full:
	podman build --layers=false --target image $(IMAGE_ARGS) --build-arg FILE_CAPS=$(FILE_CAPS) \
		$(if $(BUILDER_IMAGE),--build-arg BUILDER_IMAGE=$(BUILDER_IMAGE)) -t $(IMAGE) .
