#!/usr/bin/env bash
# Local stand-ins for the stack's base images, for `make test-compose` where no image
# registry is reachable (nothing may pull). Debian's package mirror is reachable, so:
#
#   1. `debootstrap --variant=minbase bookworm` makes a rootfs, kept as a tarball in
#      $PERMIT_PUSH_CACHE (outside the clone, so a fresh clone on the same machine reuses it);
#   2. `docker import` makes it the image permit-push-test/debian:bookworm;
#   3. images/*/Dockerfile add Debian's packages on top: python (for the Dockerfile's
#      PYTHON_IMAGE), redis, postgres, prometheus.
#
# An image is rebuilt only when its inputs (its directory, the base image) changed: each
# carries the hash of its inputs in the label org.permit-push.inputs.
set -euo pipefail
cd "$(dirname "$0")"

CACHE=${PERMIT_PUSH_CACHE:-/var/cache/permit-push}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PREFIX=permit-push-test
LABEL=org.permit-push.inputs
RECIPE="debootstrap --variant=minbase bookworm $MIRROR"

log() { echo "images: $*" >&2; }

label_of() {  # label_of IMAGE: its inputs label, empty if the image is absent
  docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null || true
}

# --- 1 + 2: the rootfs and the base image ----------------------------------------------
recipe_hash=$(printf '%s' "$RECIPE" | sha256sum | cut -c1-16)
rootfs=$CACHE/rootfs/bookworm-minbase-$recipe_hash.tar
base=$PREFIX/debian:bookworm
if [[ ! -s $rootfs ]]; then
  log "debootstrap (cold cache, a few minutes): $rootfs"
  mkdir -p "$CACHE/rootfs"
  work=$(mktemp -d "$CACHE/rootfs/build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  debootstrap --variant=minbase bookworm "$work/root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # apt's lists and the downloaded .debs are not part of an image.
  rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
  tar -C "$work/root" --numeric-owner -cf "$rootfs.tmp" .
  mv "$rootfs.tmp" "$rootfs"
  rm -rf "$work"
  trap - EXIT
fi
if [[ $(label_of "$base") != "$recipe_hash" ]]; then
  log "docker import $base"
  docker import --change "LABEL $LABEL=$recipe_hash" --change 'CMD ["bash"]' \
    "$rootfs" "$base" >/dev/null
else
  log "$base is up to date"
fi
base_id=$(docker image inspect -f '{{.Id}}' "$base")

# --- 3: the stand-ins ------------------------------------------------------------------
# name:tag of each stand-in, by its directory under images/.
declare -A TAGS=(
  [python]=python:3.11-slim
  [redis]=redis:7
  [postgres]=postgres:15
  [prometheus]=prometheus:2
)
for dir in python redis postgres prometheus; do
  image=$PREFIX/${TAGS[$dir]}
  # A copy of the directory as the build context, so nothing is written into the clone.
  context=$(mktemp -d)
  cp -r "images/$dir/." "$context/"
  if [[ $dir == python ]]; then
    # pip in the image must trust what pip on this host trusts (a proxy's CA, say).
    cp /etc/ssl/certs/ca-certificates.crt "$context/ca-certificates.crt"
  fi
  inputs=$( (echo "$base_id"; cd "$context" && find . -type f | sort | xargs sha256sum) \
    | sha256sum | cut -c1-16)
  if [[ $(label_of "$image") == "$inputs" ]]; then
    log "$image is up to date"
    rm -rf "$context"
    continue
  fi
  log "building $image"
  # Host network for apt and pip during the build: the engine runs without a bridge.
  docker build --network host --label "$LABEL=$inputs" --build-arg "BASE=$base" \
    -t "$image" "$context" >"$CACHE/build-$dir.log" 2>&1 \
    || { tail -30 "$CACHE/build-$dir.log" >&2; rm -rf "$context"; exit 1; }
  rm -rf "$context"
done
