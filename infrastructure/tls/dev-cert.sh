#!/bin/sh
# Development only: a self-signed certificate for the compose edge, as certs/edge.crt and
# certs/edge.key (the paths upstreams.toml names; compose mounts certs/ at /certs).
#
#   infrastructure/tls/dev-cert.sh [NAME...]     default names: localhost 127.0.0.1
#
# The key is made readable by the container's non-root user (mode 0644): fine for a
# throwaway development key, never for a real one (certs/*.key is git-ignored either way).
set -eu

dir="$(cd "$(dirname "$0")/../.." && pwd)/certs"
[ $# -gt 0 ] || set -- localhost 127.0.0.1

san=""
for n in "$@"; do
    case "$n" in
    *[!0-9.]*) entry="DNS:$n" ;;
    *) entry="IP:$n" ;;
    esac
    san="${san:+$san,}$entry"
done

mkdir -p "$dir"
if [ -e "$dir/edge.crt" ] || [ -e "$dir/edge.key" ]; then
    echo "dev-cert: $dir/edge.crt or edge.key exists; remove them first" >&2
    exit 1
fi
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj "/CN=$1" -addext "subjectAltName=$san" \
    -keyout "$dir/edge.key" -out "$dir/edge.crt" 2>/dev/null
chmod 0644 "$dir/edge.key" "$dir/edge.crt"
echo "dev-cert: wrote $dir/edge.crt and $dir/edge.key for $san"
