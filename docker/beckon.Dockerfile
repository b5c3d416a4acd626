# The beckon binary: replay, lint and (with `serve`) every service.
# Build from the repository root: docker build -f docker/beckon.Dockerfile .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p beckon && cp target/release/beckon /beckon

# No shell, no package manager, runs as an unprivileged user. Time zones come bundled in the
# binary (jiff), so the image needs no tzdata. The user is given by number (the base image's
# nonroot, 65532): under `runAsNonRoot` the kubelet cannot tell whether a named user is root
# and refuses to start the container.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /beckon /usr/local/bin/beckon
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/beckon"]
