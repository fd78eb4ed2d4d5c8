#!/bin/sh
# Entrypoint of the backup service.
#   cron (default)  make sure MinIO's buckets exist, then run backup.sh on BACKUP_SCHEDULE
#                   (with supercronic, as the unprivileged postgres user;
#                   cron syntax, default "0 2 * * *")
#   now             run backup.sh once and exit   (docker compose run --rm backup-service now)
#   buckets         create the MinIO buckets and exit
set -eu

case "${1:-cron}" in
now)
    exec /usr/local/bin/backup.sh
    ;;
buckets)
    exec /usr/local/bin/minio-buckets.sh
    ;;
cron)
    /usr/local/bin/minio-buckets.sh || echo "backup: could not prepare the MinIO buckets; backups continue"
    # supercronic runs jobs with this container's environment (the passwords stay in memory,
    # never written to a file).
    schedule="${BACKUP_SCHEDULE:-0 2 * * *}"
    crontab="$(mktemp)"
    echo "$schedule /usr/local/bin/backup.sh" > "$crontab"
    echo "backup: scheduled \"$schedule\" (retention ${BACKUP_RETENTION_DAYS:-30} days)"
    exec supercronic -quiet "$crontab"
    ;;
*)
    exec "$@"
    ;;
esac
