#!/bin/sh
# One backup run (the content engine's backup strategy):
#   1. PostgreSQL: pg_dump (plain SQL, --clean --if-exists --create), gzipped;
#      the newest is also copied to /database-backups/latest.sql.gz for restores
#   2. Redis: an RDB snapshot taken over the network (redis-cli --rdb)
#   3. Configuration: the edge config, compose files and infrastructure/ as a tarball
#   4. Copies 1-3 into MinIO's system-backups bucket; when S3_ENDPOINT is set, mirrors the
#      content buckets and the backups off site
#   5. Deletes local backups older than BACKUP_RETENTION_DAYS
# Environment: DATABASE_URL, REDIS_URL, MINIO_ENDPOINT, MINIO_ACCESS_KEY, MINIO_SECRET_KEY,
# BACKUP_RETENTION_DAYS, and optionally S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY, S3_BUCKET.
set -eu
# busybox ash (the image's /bin/sh) has pipefail: a failing pg_dump fails its pipeline.
# shellcheck disable=SC3040
set -o pipefail 2>/dev/null || true

: "${DATABASE_URL:?}" "${REDIS_URL:?}" "${MINIO_ENDPOINT:?}" "${MINIO_ACCESS_KEY:?}" "${MINIO_SECRET_KEY:?}"
RETENTION_DAYS="${BACKUP_RETENTION_DAYS:-30}"
DIR=/backups
TS=$(date -u +%Y%m%d_%H%M%S)
failed=0

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) backup: $*"; }
fail() { log "FAILED: $*"; failed=1; }

mkdir -p "$DIR"

# 1. PostgreSQL
pg_file="$DIR/postgres_$TS.sql.gz"
if pg_dump --dbname="$DATABASE_URL" --clean --if-exists --create | gzip > "$pg_file.part"; then
    mv "$pg_file.part" "$pg_file"
    log "postgres -> $pg_file ($(du -h "$pg_file" | cut -f1))"
    if [ -d /database-backups ]; then
        cp "$pg_file" /database-backups/latest.sql.gz.part &&
            mv /database-backups/latest.sql.gz.part /database-backups/latest.sql.gz
    fi
else
    rm -f "$pg_file.part"
    fail "pg_dump"
fi

# 2. Redis
redis_file="$DIR/redis_$TS.rdb"
if redis-cli -u "$REDIS_URL" --no-auth-warning --rdb "$redis_file" > /dev/null; then
    log "redis -> $redis_file"
else
    rm -f "$redis_file"
    fail "redis-cli --rdb"
fi

# 3. Configuration (no secrets: .env and certs/ are not mounted into this container)
config_file="$DIR/config_$TS.tar.gz"
set --
for p in upstreams.toml config infrastructure compose.yaml compose.staging.yaml compose.production.yaml; do
    [ -e "/app/$p" ] && set -- "$@" "$p"
done
if [ $# -gt 0 ] && tar -czf "$config_file" -C /app --exclude='infrastructure/database/backups' "$@"; then
    log "config -> $config_file"
else
    rm -f "$config_file"
    fail "config archive"
fi

# 4. Object storage
if mc alias set minio "http://$MINIO_ENDPOINT" "$MINIO_ACCESS_KEY" "$MINIO_SECRET_KEY" > /dev/null; then
    for f in "$pg_file" "$redis_file" "$config_file"; do
        [ -f "$f" ] || continue
        mc cp --quiet "$f" "minio/system-backups/$(basename "$f")" > /dev/null || fail "upload $f"
    done
    if [ -n "${S3_ENDPOINT:-}" ]; then
        bucket="${S3_BUCKET:-content-engine-backups}"
        if mc alias set s3 "$S3_ENDPOINT" "${S3_ACCESS_KEY:-}" "${S3_SECRET_KEY:-}" > /dev/null; then
            for b in content-assets newsletter-templates system-backups; do
                mc mirror --quiet --overwrite "minio/$b" "s3/$bucket/$b" > /dev/null || fail "mirror $b to S3"
            done
            log "mirrored to $S3_ENDPOINT/$bucket"
        else
            fail "S3 alias"
        fi
    fi
else
    fail "MinIO alias"
fi

# 5. Retention (system-backups also expires objects itself: a 30-day lifecycle rule)
find "$DIR" -type f \( -name 'postgres_*.sql.gz' -o -name 'redis_*.rdb' -o -name 'config_*.tar.gz' \) \
    -mtime +"$RETENTION_DAYS" -print -delete | sed 's/^/backup: expired /'

if [ "$failed" -ne 0 ]; then
    log "finished with errors"
    exit 1
fi
log "finished"
