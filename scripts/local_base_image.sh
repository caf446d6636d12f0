#!/usr/bin/env bash
# Build the local base image `make images-local` builds on, where no registry is reachable:
# a Debian bookworm root filesystem from Debian's own packages (debootstrap) with Python 3.11
# in a venv on PATH, imported into podman. Skips the work when the image exists. Root.
#   scripts/local_base_image.sh [IMAGE]     (default localhost/selfcorrect-local-base:bookworm)
# PIP_CERT points pip at the system CA bundle: the builds mount the host's bundle over it.
set -euo pipefail
image=${1:-localhost/selfcorrect-local-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if podman image exists "$image"; then echo "$image exists"; exit 0; fi
root=$(mktemp -d /var/tmp/selfcorrect-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$root" "$mirror"
chroot "$root" python3 -m venv /opt/venv
chroot "$root" /opt/venv/bin/python -c "import sys; assert sys.version_info[:2] == (3, 11), sys.version"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | podman import \
  --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' - "$image"
podman image inspect "$image" --format '{{.Id}} {{.Size}}'
