#!/bin/sh
# A Debian bookworm base with Python 3.11 (Debian's python3, the same minor version as
# python:3.11-slim), made with debootstrap for hosts that reach Debian's package mirror
# but no container registry. Kept in the local image store under a tag that names this
# recipe's version, so later builds reuse it (delete it to rebuild:
# `podman rmi localhost/ai-factory-twin-base:bookworm-1`).
# Usage: image/base.sh ENGINE   (podman or docker: the store to import into); prints the tag.
set -eu
ENGINE=${1:?usage: image/base.sh podman|docker}
TAG=localhost/ai-factory-twin-base:bookworm-1
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if $ENGINE image inspect "$TAG" >/dev/null 2>&1; then echo "$TAG"; exit 0; fi
command -v debootstrap >/dev/null || { echo "image/base.sh: debootstrap is not installed" >&2; exit 1; }
ROOT=$(mktemp -d /var/tmp/twin-base.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT
# minbase: dpkg, apt and the essential tools, no init or daemons; python3-venv brings
# ensurepip's wheels, python-is-python3 the `python` the Dockerfile calls.
echo "image/base.sh: debootstrap bookworm from $MIRROR (about a minute)" >&2
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || { tail -20 "$ROOT.log" >&2; exit 1; }
rm -f "$ROOT.log"
# The machine's own CA certificates (a TLS-intercepting proxy in front of PyPI or the
# mirror): pip inside the build trusts what this host trusts.
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    chroot "$ROOT" update-ca-certificates >/dev/null 2>&1
fi
# What an image never reads: package caches and lists, documentation, translations.
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* \
    "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/* \
    "$ROOT"/var/log/*.log "$ROOT"/var/cache/debconf/*-old
tar -C "$ROOT" -c . | $ENGINE import --change 'CMD ["python3"]' - "$TAG" >/dev/null
echo "$TAG"
