#!/usr/bin/env bash
# One-time machine setup for `make images-local` / `make test-containers` on Debian 12 (root):
# podman (Docker API via `podman system service`), runc, debootstrap. Idempotent.
#   sudo scripts/podman_setup.sh
# containers.conf: runc with the cgroupfs manager (no systemd here) and no default ulimits
# (podman's default nofile limit cannot be raised inside an unprivileged VM).
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "run as root (apt-get and /etc/containers)" >&2; exit 2; fi
need=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    podman runc debootstrap fuse-overlayfs slirp4netns uidmap iptables ca-certificates
fi
mkdir -p /etc/containers
conf=/etc/containers/containers.conf
if ! grep -q "selfcorrect" "$conf" 2>/dev/null; then
  cat >> "$conf" <<'CONF'
# selfcorrect (scripts/podman_setup.sh): runc + cgroupfs, no default ulimits
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
fi
podman --version
