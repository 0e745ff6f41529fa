#!/usr/bin/env bash
# Installs what `make test-compose` needs, where missing (Debian, as root): Docker's
# engine (docker.io), debootstrap, and compose v2 (`docker compose`); and kustomize, with
# which tests/unit/test_kubernetes.py builds deploy/kubernetes and its Sentinel overlay.
#
# Compose v2: bookworm's `docker-compose` package is compose v1 (python), and PyPI has
# no compose v2 from Docker itself. Debian's next release (trixie) packages compose v2
# as `docker-compose` (a Go binary needing only libc6 >= 2.34; bookworm has 2.36), so it
# is fetched by name from Debian's trixie suite with a private apt configuration under
# $PERMIT_PUSH_CACHE/apt: this machine's sources.list stays bookworm-only and no other
# package comes from trixie. kustomize (bookworm has none) comes the same way.
set -euo pipefail

CACHE=${PERMIT_PUSH_CACHE:-/var/cache/permit-push}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { echo "install: $*" >&2; }

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

apt_dir=$CACHE/apt
from_trixie() {  # from_trixie PACKAGE: download and install that one package from trixie
  log "$1: Debian trixie's package"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
  echo "deb $MIRROR trixie main" >"$apt_dir/sources.list"
  local apt_opts=(
    -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::archives=$apt_dir/archives"
  )
  apt-get "${apt_opts[@]}" update -qq
  (cd "$apt_dir" && rm -f "$1"_*.deb && apt-get "${apt_opts[@]}" download "$1")
  dpkg -i "$apt_dir/$1"_*.deb >/dev/null
}

docker compose version >/dev/null 2>&1 || from_trixie docker-compose
command -v kustomize >/dev/null 2>&1 || from_trixie kustomize
version=$(docker compose version --short)
[[ $version == 2.* ]] || { log "docker compose is $version, not v2"; exit 1; }
log "docker compose $version"
