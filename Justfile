# Everyday recipes. Install just with `cargo install just --locked`.

set shell := ["bash", "-euo", "pipefail", "-c"]

events := "examples/events/shop.jsonl"
journeys := "examples/journeys"

# List the recipes.
default:
    @just --list

# Build every crate, debug.
build:
    cargo build --workspace --locked

# The whole test suite (installs redis-server when missing; tests start their own).
test *args:
    scripts/test {{args}}

# Replay an event file through the example journeys (release build).
replay file=events:
    cargo run --release --locked -p beckon -- replay --events {{file}} --journeys {{journeys}} \
        --report out/report.json --messages out/messages.jsonl

# Every service in one process on the embedded store; messages are recorded to out/sent.jsonl.
up:
    cargo run --release --locked -p beckon -- serve all --listen 127.0.0.1:50051 \
        --journeys {{journeys}} --messages-out out/sent.jsonl

# The five services as separate processes on a redis-server of their own.
up-services:
    scripts/up-services

# Every benchmark figure beside its same-run reference (see BENCHMARKS.md); `just bench
# --quick` for a few-second check, `just bench --only replay,ingest` for some figures.
bench *args:
    cargo build --release --locked -p beckon
    "${CARGO_TARGET_DIR:-target}/release/beckon" bench {{args}}

# Replay the public Taobao sample and print throughput and peak memory.
bench-replay:
    cargo build --release --locked -p beckon
    /usr/bin/time -v "${CARGO_TARGET_DIR:-target}/release/beckon" replay \
        --events ../shared/data/taobao-userbehavior/events.segment.jsonl \
        --journeys {{journeys}} --report out/bench-report.json --no-progress 2>&1 \
        | grep -E "events:|Maximum resident|Elapsed"

# Check specs.
lint-specs path=journeys:
    cargo run --locked -p beckon -- lint {{path}}

# Formatting and lints exactly as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# The Kubernetes manifests and Dockerfiles: the binary accepts every Deployment's settings,
# references resolve, pods run as the image's numeric non-root user.
deploy-check:
    cargo test --locked -p beckon --test deploy_manifests

# What CI runs.
ci:
    .ci/run
