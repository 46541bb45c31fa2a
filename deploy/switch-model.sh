#!/usr/bin/env bash
# Switch the model of every TorchServe container, with a check and a way back: the step sequence of
# tools/model_upgrade.py that Compose (`make docker-model-upgrade` / `docker-model-rollback`),
# Swarm (`make swarm-model-upgrade`, deploy/swarm/swarm.sh) and Kubernetes (`make
# k8s-model-upgrade`, deploy/kubernetes/model-upgrade.sh) run.
#
#   switch-model.sh upgrade|rollback [tool options]     COMPOSE="docker compose -p NAME" to name a project
#
# The management API is a Unix socket inside each TorchServe container (docs/security.md), so the
# steps that use it run there (`docker exec`, `kubectl exec`); the store is read-only there, so the
# steps that write it run in a one-shot container that mounts it writable. Every replica is
# checked before any switches; a refused candidate is withdrawn from all of them.
# What differs between the engines comes from the environment (Compose's when unset):
#   STORE_STEP             the command that runs `python -m tools.model_upgrade ARGS` in that
#                          one-shot container (default: `$COMPOSE run --rm --no-deps upgrade`, the
#                          `upgrade` service of docker-compose.yml, CANDIDATE_DIR at /candidate)
#   TORCHSERVE_CONTAINERS  the TorchServe containers to switch (default: the Compose project's)
#   REPLICA_EXEC           the command that runs a command in one of them, as `docker exec [-i]
#                          CONTAINER COMMAND...` does (default: docker exec)
# CHECK_DATA: a labelled TSV (SST-2 dev) the check reads, streamed into each container.
set -euo pipefail

command="${1:-}"
case "$command" in upgrade | rollback) shift ;; *) echo "usage: $0 upgrade|rollback [tool options]" >&2; exit 2 ;; esac
read -r -a compose <<<"${COMPOSE:-docker compose}"
mounts=()
[ -z "${CANDIDATE_DIR:-}" ] || mounts+=(-v "$CANDIDATE_DIR:/candidate:ro")

in_store() {
    if [ -n "${STORE_STEP:-}" ]; then
        local store_step
        read -r -a store_step <<<"$STORE_STEP"
        "${store_step[@]}" "$@"
    else
        "${compose[@]}" run --rm --no-deps "${mounts[@]}" upgrade "$@"
    fi
}
read -r -a replica_exec <<<"${REPLICA_EXEC:-docker exec}"
in_torchserve() {
    local container="$1"
    shift
    if [ -n "${CHECK_DATA:-}" ] && [ "$1" = check ]; then
        "${replica_exec[@]}" -i "$container" python -m tools.model_upgrade "$@" --labelled /dev/stdin <"$CHECK_DATA"
    else
        "${replica_exec[@]}" "$container" python -m tools.model_upgrade "$@"
    fi
}

read -r -a containers <<<"${TORCHSERVE_CONTAINERS:-$("${compose[@]}" ps -q torchserve | tr '\n' ' ')}"
[ "${#containers[@]}" -gt 0 ] || { echo "error: no running torchserve container" >&2; exit 1; }

# Progress goes to stderr as it comes; the last line of a step's output is its answer.
version="$(in_store stage --for "$command" "$@" | tee /dev/stderr | tail -n 1)"
current=""
for container in "${containers[@]}"; do
    if ! current="$(in_torchserve "$container" check "$version" --for "$command" "$@" | tee /dev/stderr | tail -n 1)"; then
        for other in "${containers[@]}"; do
            in_torchserve "$other" retire "$version" "$@" --drain-s 0 || true
        done
        in_store discard "$version" || true
        echo "$version was refused; the model did not change" >&2
        exit 1
    fi
done
if [ "$current" = "$version" ]; then
    echo "$version already serves"
    exit 0
fi
for container in "${containers[@]}"; do
    in_torchserve "$container" promote "$version"
done
in_store record "$version" "$current"
drained=""
for container in "${containers[@]}"; do
    # The drain (--drain-s) once: requests begun on the old version finish before it goes.
    in_torchserve "$container" retire "$current" "$@" ${drained:+--drain-s 0}
    drained=yes
done
echo "$version serves; $current is kept for a rollback"
