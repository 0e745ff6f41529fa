#!/usr/bin/env bash
# Installs what `make test-compose` needs, where missing (Debian, as root): Docker's
# engine (docker.io), debootstrap, and compose v2 (`docker compose`).
#
# Compose v2: bookworm's `docker-compose` package is compose v1 (python), and PyPI has
# no compose v2 from Docker itself. Debian's next release (trixie) packages compose v2
# as `docker-compose` (a Go binary needing only libc6 >= 2.34; bookworm has 2.36), so it
# is fetched by name from Debian's trixie suite with a private apt configuration under
# $PERMIT_PUSH_CACHE/apt: this machine's sources.list stays bookworm-only and no other
# package comes from trixie.
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

if ! docker compose version >/dev/null 2>&1; then
  log "compose v2: Debian trixie's docker-compose package"
  apt_dir=$CACHE/apt
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
  echo "deb $MIRROR trixie main" >"$apt_dir/sources.list"
  apt_opts=(
    -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::archives=$apt_dir/archives"
  )
  apt-get "${apt_opts[@]}" update -qq
  (cd "$apt_dir" && rm -f docker-compose_*.deb && apt-get "${apt_opts[@]}" download docker-compose)
  dpkg -i "$apt_dir"/docker-compose_*.deb >/dev/null
fi
version=$(docker compose version --short)
[[ $version == 2.* ]] || { log "docker compose is $version, not v2"; exit 1; }
log "docker compose $version"
