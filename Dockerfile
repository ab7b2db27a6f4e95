# rarp-announce container image: one static binary on scratch, run as a
# non-root user. See docs/deploy.md.
#
#   Full build:        podman build --build-arg VERSION=1.2.3 --build-arg REVISION=$(git rev-parse HEAD) -t rarp-announce .
#   From a host build: make image   (target "local": pulls nothing, COPYs dist/image/rarp-announce)
#
# The binary carries file capabilities cap_net_raw,cap_net_admin=ep: a
# Kubernetes container running as non-root gets its added capabilities only
# in the bounding set, and takes them from the file at exec. So the container
# must be given both capabilities (or the image built with
# --build-arg FILE_CAPS=cap_net_raw when FDB repair is off), and must not set
# no_new_privs (allowPrivilegeEscalation: false), or exec fails with EPERM.

ARG BUILDER_IMAGE=docker.io/library/golang:1.26-bookworm

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG REVISION=unknown
ARG FILE_CAPS=cap_net_raw,cap_net_admin
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/rarp-announce/rarp-announce/internal/version.Version=${VERSION} -X github.com/rarp-announce/rarp-announce/internal/version.Revision=${REVISION}" \
      -o /out/rarp-announce ./cmd/rarp-announce \
 && go run ./deploy/container/setfcap /out/rarp-announce "${FILE_CAPS}"

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
# Numeric, so runAsNonRoot can check it without reading /etc/passwd.
USER 65532:65532
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
