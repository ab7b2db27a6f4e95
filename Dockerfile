# rarp-announce container image: one static binary on scratch, run as
# UID 0 with its capabilities bounded by the runtime to NET_RAW (and
# NET_ADMIN for FDB repair). See docs/deploy.md.
#
#   Full build:        podman build --build-arg VERSION=1.2.3 --build-arg REVISION=$(git rev-parse HEAD) -t rarp-announce .
#   From a host build: make image   (target "local": pulls nothing, COPYs dist/image/rarp-announce)
#
# Why UID 0 and no file capabilities (the pattern of MetalLB's speaker):
#   - libvirtd looks the connecting UID up in the host's passwd database and
#     refuses one it does not know ("Failed to find user record for uid"):
#     an image-only user such as 65532 cannot even use the read-only socket.
#   - Open vSwitch's sockets are root-only on Debian/Ubuntu.
#   - UID 0 gets the container's capabilities (cap_add) directly, so
#     allowPrivilegeEscalation: false (no_new_privs) can stay on; a non-root
#     user would need file capabilities, which no_new_privs voids, and with
#     NET_ADMIN in them exec fails in a container given NET_RAW only.
# Run it with every capability dropped but NET_RAW (+NET_ADMIN for FDB
# repair), a read-only root filesystem and no_new_privs; the agent checks
# at start that it holds what its config needs and exits 1 naming what is
# missing.

ARG BUILDER_IMAGE=docker.io/library/golang:1.26-bookworm

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG REVISION=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/rarp-announce/rarp-announce/internal/version.Version=${VERSION} -X github.com/rarp-announce/rarp-announce/internal/version.Revision=${REVISION}" \
      -o /out/rarp-announce ./cmd/rarp-announce

# What every final image shares: metadata, user, entrypoint.
FROM scratch AS base
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=
ARG SOURCE=https://github.com/rarp-announce/rarp-announce
LABEL org.opencontainers.image.title="rarp-announce" \
      org.opencontainers.image.description="RARP announces for live-migrated VMs on KVM/libvirt hosts, RARP responder, Prometheus metrics" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.url="${SOURCE}" \
      org.opencontainers.image.documentation="${SOURCE}/blob/main/docs/deploy.md" \
      org.opencontainers.image.base.name="scratch"
COPY deploy/container/passwd /etc/passwd
COPY deploy/container/group /etc/group
USER 0:0
# Metrics, /healthz and /readyz (127.0.0.1 unless the config says otherwise).
EXPOSE 9798/tcp
ENTRYPOINT ["/usr/bin/rarp-announce"]
CMD ["run"]

# The binary built on the host ("make image"): no builder image needed.
FROM base AS local
ARG BINARY=dist/image/rarp-announce
COPY ${BINARY} /usr/bin/rarp-announce

# The default target: built in the builder stage.
FROM base AS image
COPY --from=build /out/rarp-announce /usr/bin/rarp-announce
