# rarp-announce
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
PKG      := github.com/rarp-announce/rarp-announce
LDFLAGS  := -s -w -X $(PKG)/internal/version.Version=$(VERSION) -X $(PKG)/internal/version.Revision=$(REVISION)
BIN      := bin/rarp-announce
export PATH := $(PATH):/usr/local/go/bin

.PHONY: build test test-fast test-kernel bench clean image image-full packages release

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
# in the builder image (BUILDER_IMAGE, default golang:1.26). The image runs
# as UID 0 with capabilities bounded by the runtime: no file capabilities.
# --layers=false: buildah 1.28 reuses a cached LABEL layer built with other
# ARG values, and would keep intermediate images.
IMAGE       ?= localhost/rarp-announce:$(VERSION)
CREATED     ?= $(shell git log -1 --format=%cI 2>/dev/null)
IMAGE_ARGS   = --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) --build-arg CREATED=$(CREATED)

image: $(BIN)
	mkdir -p dist/image
	install -m 0755 $(BIN) dist/image/rarp-announce
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
	podman build --layers=false --target image $(IMAGE_ARGS) \
		$(if $(BUILDER_IMAGE),--build-arg BUILDER_IMAGE=$(BUILDER_IMAGE)) -t $(IMAGE) .

# A release (CHANGELOG.md, "Versions and tags"): from a clean tree, the
# static binary, the .deb and .rpm, the container image as an OCI archive
# (podman load -i), and SHA256SUMS over them, in $(RELEASE_DIR). Run as
# root (the image target sets file capabilities).
RELEASE_DIR ?= dist/release

release:
	@case '$(VERSION)' in *dirty*) echo "release: the tree has uncommitted changes ($(VERSION))" >&2; exit 1;; esac
	rm -rf $(RELEASE_DIR) && mkdir -p $(RELEASE_DIR)
	$(MAKE) packages DIST=$(RELEASE_DIR)/pkg VERSION=$(VERSION) REVISION=$(REVISION)
	$(MAKE) image VERSION=$(VERSION) REVISION=$(REVISION)
	install -m 0755 $(BIN) $(RELEASE_DIR)/rarp-announce-$(VERSION)-linux-$(PKG_ARCH)
	mv $(RELEASE_DIR)/pkg/*.deb $(RELEASE_DIR)/pkg/*.rpm $(RELEASE_DIR)/ && rm -rf $(RELEASE_DIR)/pkg
	podman save --format oci-archive -o $(RELEASE_DIR)/rarp-announce-$(VERSION)-image.oci.tar $(IMAGE)
	cd $(RELEASE_DIR) && sha256sum -- * > SHA256SUMS && sha256sum -c --quiet SHA256SUMS
	@cat $(RELEASE_DIR)/SHA256SUMS
