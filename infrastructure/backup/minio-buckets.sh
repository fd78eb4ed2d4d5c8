#!/bin/sh
# Creates the content engine's MinIO buckets if they are missing, with its versioning
# and retention (lifecycle) settings. Idempotent; the backup service runs it when it starts.
set -eu

: "${MINIO_ENDPOINT:?}" "${MINIO_ACCESS_KEY:?}" "${MINIO_SECRET_KEY:?}"

mc alias set minio "http://$MINIO_ENDPOINT" "$MINIO_ACCESS_KEY" "$MINIO_SECRET_KEY" > /dev/null

for b in content-assets newsletter-templates instagram-media system-backups temp-uploads; do
    mc mb --ignore-existing "minio/$b" > /dev/null
done
for b in content-assets newsletter-templates system-backups; do
    mc version enable "minio/$b" > /dev/null || echo "buckets: versioning not enabled on $b"
done

# Expiry in days: temp-uploads 24 hours, instagram-media 1 year, system-backups 30 days.
for rule in temp-uploads:1 instagram-media:365 system-backups:${BACKUP_RETENTION_DAYS:-30}; do
    b=${rule%%:*}
    days=${rule#*:}
    if ! mc ilm rule ls "minio/$b" > /dev/null 2>&1; then
        mc ilm rule add --expire-days "$days" "minio/$b" > /dev/null
    fi
done
echo "buckets: ready"
