#!/bin/sh
# Entrypoint of the backup service.
#   cron (default)  make sure MinIO's buckets exist, then run backup.sh on BACKUP_SCHEDULE
#                   (cron syntax, default "0 2 * * *")
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
    # crond starts jobs with an empty environment: hand them this container's, readable by
    # root only (it holds the passwords).
    umask 077
    export -p > /run/backup.env
    schedule="${BACKUP_SCHEDULE:-0 2 * * *}"
    echo "$schedule . /run/backup.env && /usr/local/bin/backup.sh > /proc/1/fd/1 2>&1" \
        > /etc/crontabs/root
    echo "backup: scheduled \"$schedule\" (retention ${BACKUP_RETENTION_DAYS:-30} days)"
    exec crond -f -l 6
    ;;
*)
    exec "$@"
    ;;
esac
