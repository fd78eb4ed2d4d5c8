#!/bin/sh
# Certbot deploy hook for staging (Let's Encrypt): copies a renewed certificate into the
# directory the edge's /certs is mounted from (TLS_CERT_DIR in .env), as the names the
# edge config expects: edge.crt (the full chain, leaf first) and edge.key.
#
#   certbot certonly --dns-<provider> -d staging.example.com \
#       --deploy-hook "TLS_CERT_DIR=/srv/content-engine/certs /srv/content-engine/infrastructure/tls/certbot-deploy-hook.sh"
#
# Certbot sets RENEWED_LINEAGE (e.g. /etc/letsencrypt/live/staging.example.com). Each file
# is written beside its target and renamed over it, key first, so the edge never reads half
# a file; the edge watches both files and swaps the certificate in without a restart.
# The edge runs as the image's non-root `edge` user. Set EDGE_GID to its group id
# (`docker compose exec edge id -g`) and the key is mode 0640 with that group; without it the
# key has to be world-readable (0644), so keep TLS_CERT_DIR itself closed (mode 0750 or so).
set -eu

: "${RENEWED_LINEAGE:?run by certbot as a --deploy-hook}"
: "${TLS_CERT_DIR:?set TLS_CERT_DIR to the directory mounted at /certs}"

if [ -n "${EDGE_GID:-}" ]; then
    install -m 0640 -g "$EDGE_GID" "$RENEWED_LINEAGE/privkey.pem" "$TLS_CERT_DIR/.edge.key.new"
else
    install -m 0644 "$RENEWED_LINEAGE/privkey.pem" "$TLS_CERT_DIR/.edge.key.new"
fi
install -m 0644 "$RENEWED_LINEAGE/fullchain.pem" "$TLS_CERT_DIR/.edge.crt.new"
mv -f "$TLS_CERT_DIR/.edge.key.new" "$TLS_CERT_DIR/edge.key"
mv -f "$TLS_CERT_DIR/.edge.crt.new" "$TLS_CERT_DIR/edge.crt"
echo "certbot-deploy-hook: installed $(basename "$RENEWED_LINEAGE") into $TLS_CERT_DIR"
