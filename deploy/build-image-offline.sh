#!/usr/bin/env bash
# Builds deploy/Dockerfile with Podman on a machine that reaches Debian's archive
# and the Rust project's servers but no container registry: it makes the two base
# images the Dockerfile names from those sources (Debian with debootstrap; the Rust
# toolchain the Dockerfile's `FROM rust:X-bookworm` names, with rustup, checked by
# its published SHA-256), under those names, then builds the image without pulling
# and runs each binary in it. Where a registry is reachable, `docker build -f
# deploy/Dockerfile -t arf .` is all it takes.
#
# Usage: deploy/build-image-offline.sh [TAG]   (run as root; needs podman and debootstrap)
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-localhost/arf:dev}
work=${ARF_IMAGE_WORK:-/var/tmp/arf-image}
rust=$(sed -n 's/^FROM rust:\([0-9.]*\)-bookworm.*/\1/p' deploy/Dockerfile)
[ -n "$rust" ] || { echo "deploy/Dockerfile names no rust:X-bookworm image" >&2; exit 1; }
# Where containers may not raise a limit (no CAP_SYS_RESOURCE, as on the machine
# this was written on, whose runc also refused an nproc limit as high as the
# host's), give every container limits below the host's, and a runtime by name
# (ARF_OCI_RUNTIME, say `runc`; Podman's default otherwise).
limits=(--ulimit "nofile=${ARF_IMAGE_NOFILE:-$(ulimit -Hn)}:${ARF_IMAGE_NOFILE:-$(ulimit -Hn)}" --ulimit "nproc=${ARF_IMAGE_NPROC:-20000}:${ARF_IMAGE_NPROC:-20000}")
podman=(podman)
[ -z "${ARF_OCI_RUNTIME:-}" ] || podman+=(--runtime "$ARF_OCI_RUNTIME")
mkdir -p "$work"

if ! "${podman[@]}" image exists docker.io/library/debian:bookworm-slim; then
  rm -rf "$work/rootfs"
  debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian
  tar -C "$work/rootfs" -c . | "${podman[@]}" import --change 'CMD ["bash"]' - docker.io/library/debian:bookworm-slim
  rm -rf "$work/rootfs"
fi

if ! "${podman[@]}" image exists "docker.io/library/rust:$rust-bookworm"; then
  # Behind a proxy that intercepts TLS, the rust image it makes trusts the proxy's
  # CA too (ARF_IMAGE_CA, a PEM file), for rustup and for cargo's downloads in the
  # Dockerfile's build stage; nothing of it reaches the final image.
  cp "${ARF_IMAGE_CA:-/dev/null}" "$work/extra-ca.crt"
  cat > "$work/Containerfile.rust" <<RUST
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl gcc libc6-dev make git && rm -rf /var/lib/apt/lists/*
COPY extra-ca.crt /usr/local/share/ca-certificates/extra-ca.crt
RUN update-ca-certificates
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:\$PATH
RUN curl -sSfo /tmp/rustup-init https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init \\
    && echo "\$(curl -sSf https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init.sha256 | cut -d' ' -f1)  /tmp/rustup-init" | sha256sum -c - \\
    && chmod +x /tmp/rustup-init && /tmp/rustup-init -y --no-modify-path --profile minimal --default-toolchain $rust \\
    && rm /tmp/rustup-init && rustc --version
RUST
  "${podman[@]}" build "${limits[@]}" --pull=never -t "docker.io/library/rust:$rust-bookworm" -f "$work/Containerfile.rust" "$work"
fi

"${podman[@]}" build "${limits[@]}" --pull=never -f deploy/Dockerfile -t "$tag" .
for binary in arf-audit arf-agent arf-governor arf-executor arf; do
  "${podman[@]}" run "${limits[@]}" --rm "$tag" "$binary" --version
done
# The whole demo in the image, with no network but its own loopback: the four
# services, an incident from signal to verified outcome, and the log verified.
"${podman[@]}" run "${limits[@]}" --rm --network none "$tag" arf demo
echo "built $tag from deploy/Dockerfile with Rust $rust; the demo passed in it"
