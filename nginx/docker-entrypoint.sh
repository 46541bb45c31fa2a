#!/bin/sh
# Entrypoint of the sentiment-nginx image: render nginx.conf.template, then exec nginx as PID 1.
#
# Only the ${NGINX_*} placeholders listed below are substituted (the image's ENV sets them; any can
# be overridden with `environment:`), so nginx's own $variables survive. The config is written to
# $NGINX_RUN_DIR (default /tmp/nginx), the one place the unprivileged nginx user writes to, along
# with nginx's pid file and temp dirs. nginx logs to the container's stdout/stderr.
set -eu

: "${NGINX_RUN_DIR:?}" "${NGINX_ERROR_LOG:?}" "${NGINX_ACCESS_LOG:?}" "${NGINX_MAX_BODY_SIZE:?}"
: "${NGINX_MAX_BODY_LABEL:?}" "${NGINX_TOPOLOGY_CONF:?}" "${NGINX_LISTEN:?}"
export NGINX_RUN_DIR NGINX_ERROR_LOG NGINX_ACCESS_LOG NGINX_MAX_BODY_SIZE NGINX_MAX_BODY_LABEL \
    NGINX_TOPOLOGY_CONF NGINX_LISTEN

TEMPLATE="${NGINX_TEMPLATE:-/etc/sentiment-nginx/nginx.conf.template}"
CONFIG="$NGINX_RUN_DIR/nginx.conf"

mkdir -p "$NGINX_RUN_DIR"
envsubst '${NGINX_RUN_DIR} ${NGINX_ERROR_LOG} ${NGINX_ACCESS_LOG} ${NGINX_MAX_BODY_SIZE} ${NGINX_MAX_BODY_LABEL} ${NGINX_TOPOLOGY_CONF} ${NGINX_LISTEN}' \
    <"$TEMPLATE" >"$CONFIG.tmp"
mv "$CONFIG.tmp" "$CONFIG"

# Arguments replace the default command after rendering, e.g. to check the rendered config:
#   docker run --rm sentiment-nginx nginx -t -e stderr -c /tmp/nginx/nginx.conf
# Without arguments nginx runs in the foreground as PID 1.
if [ "$#" -gt 0 ]; then
    exec "$@"
fi
# -e stderr: nginx opens its compiled-in error log before it reads the config.
exec nginx -c "$CONFIG" -e stderr -g 'daemon off;'
