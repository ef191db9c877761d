#!/usr/bin/env bash
# Install the system programs the stack and its tests run: redis-server (state store),
# espeak-ng/sox/ffmpeg (speech and media for tests and the corpus builder), chromium and
# chromedriver, iproute2 (the web page's browser test). Debian/Ubuntu only; a no-op when all are there.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v ip >/dev/null || need+=(iproute2)  # the browser test's loopback-only namespace
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "error: missing system packages: ${need[*]} (install them with your package manager)" >&2
    exit 2
fi
echo "installing system packages: ${need[*]} ..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
