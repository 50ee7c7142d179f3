# syntax=docker/dockerfile:1
# sluice: build with the Rust toolchain (profile-guided), then run on a slim Debian with only the stripped binary and
# ONNX Runtime, plus the build image's CA bundle for the one outbound TLS client (a bucket model repository).
#   docker build -t sluice:0.1.0 .
#   docker run -p 8000:8000 -v "$PWD/models:/models:ro" sluice:0.1.0

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ONNX Runtime comes from the official PyPI wheel, pinned by version and sha256 (the same as scripts/fetch-onnxruntime.sh).
FROM python:3.11-slim-${DEBIAN_RELEASE} AS onnxruntime
ARG ORT_VERSION=1.32.0
ARG ORT_WHEEL=onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl
ARG ORT_SHA256=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /ort
RUN python -m pip download --no-cache-dir --quiet --no-deps --only-binary=:all: \
        --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 \
        "onnxruntime==${ORT_VERSION}" -d . \
    && echo "${ORT_SHA256}  ${ORT_WHEEL}" | sha256sum --check --quiet - \
    && python -c "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); open('libonnxruntime.so.${ORT_VERSION}','wb').write(z.read('onnxruntime/capi/libonnxruntime.so.${ORT_VERSION}'))" "${ORT_WHEEL}"

# The profile-guided build (scripts/build-release.sh): an instrumented sluice serves the example models under a
# training load (wrk and h2load, loopback), then the optimised binary is built with the profile. llvm-profdata must be the
# LLVM of the Rust toolchain (22 for 1.95).
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
ARG ORT_VERSION=1.32.0
RUN apt-get update \
    && apt-get install -y --no-install-recommends llvm-22=1:22.1.* wrk=4.1.0-* nghttp2-client=1.52.* \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY benches ./benches
COPY models ./models
COPY scripts/build-release.sh ./scripts/
COPY scripts/lib/debian-install.sh ./scripts/lib/
COPY scripts/perf/pgo-train.lua scripts/perf/pgo-train-grpc.sh ./scripts/perf/
COPY --from=onnxruntime /ort/libonnxruntime.so.${ORT_VERSION} /ort/
# Crates and compiled dependencies live in BuildKit cache mounts: a change in src/ or models/ rebuilds sluice, not
# its dependencies, and fetches no crate again. The binary leaves the cache stripped, its debug info beside it
# (/out/sluice.debug, for `docker build --target build` and a profiler; linked by .gnu_debuglink).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    ORT_DYLIB_PATH=/ort/libonnxruntime.so.${ORT_VERSION} scripts/build-release.sh \
    && mkdir -p /out \
    && llvm-objcopy-22 --only-keep-debug target/pgo/sluice /out/sluice.debug \
    && llvm-objcopy-22 --strip-debug --strip-unneeded --add-gnu-debuglink=/out/sluice.debug target/pgo/sluice /out/sluice

FROM debian:${DEBIAN_RELEASE}-slim
ARG ORT_VERSION=1.32.0
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="ONNX model server speaking the Open Inference Protocol (V2 REST and gRPC)" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/sluice/sluice"
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin sluice \
    && mkdir -p /models /var/lib/sluice/payloads \
    && chown 10001:10001 /var/lib/sluice/payloads
COPY --from=build /out/sluice /usr/local/bin/sluice
# CA certificates for the HTTPS calls sluice makes (a bucket repository on S3, GCS or Azure; an https webhook):
# the bundle of the pinned build image, so the runtime stage installs no package.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=onnxruntime /ort/libonnxruntime.so.${ORT_VERSION} /usr/local/lib/sluice/libonnxruntime.so.${ORT_VERSION}
ENV ORT_DYLIB_PATH=/usr/local/lib/sluice/libonnxruntime.so.${ORT_VERSION} \
    SLUICE__MODELS__REPOSITORY=/models \
    SLUICE__LOG__FORMAT=json \
    SLUICE__PAYLOAD_LOG__PATH=/var/lib/sluice/payloads/sluice.jsonl \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 10001
EXPOSE 8000 8001
# Models in; prediction logs out (when payload_log.sink = "file").
VOLUME ["/models", "/var/lib/sluice/payloads"]
ENTRYPOINT ["/usr/local/bin/sluice"]
