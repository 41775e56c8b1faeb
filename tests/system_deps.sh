#!/usr/bin/env bash
# Debian packages some tests need: Chromium (the report renders in a browser) and SLURM + munge (the
# workflow runs on a one-node SLURM cluster). Installed when running as root and missing; otherwise
# those tests skip and say why.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium chromium-driver)
command -v slurmctld >/dev/null || missing+=(slurm-wlm)
command -v munged >/dev/null || missing+=(munge)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "not root: skipping apt-get install ${missing[*]} (the tests that need them will skip)" >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
