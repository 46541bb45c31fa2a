#!/usr/bin/env bash
# The sentiment service on Docker Swarm (deploy/swarm/stack.yml). The Makefile's swarm-* targets
# call this; each command is safe to repeat.
#
#   swarm.sh up       init a one-node swarm if the engine is in none (and remember that in a
#                     node label), build the images, deploy the stack, wait until nginx answers
#                     /readyz and every service runs all its replicas
#   swarm.sh scale    APP=N: facade replicas (docker service scale); WORKERS=N: TorchServe workers
#                     of every TorchServe task on this node (management API socket, via docker exec)
#   swarm.sh model-upgrade|model-rollback [tool options]
#                     switch every TorchServe task on this node to MODEL_DIR's model (or --archive
#                     /candidate/FILE with CANDIDATE_DIR) if it passes the check, or back to the
#                     previous model: deploy/switch-model.sh's steps, the store's in a one-shot
#                     container on the node's model-store volume (store-step)
#   swarm.sh down     remove the stack and wait until none of its tasks, networks and volumes is
#                     left; leave the swarm only if `up` created it and no other stack runs on it
#   swarm.sh status   the stack's services and tasks
#
# Environment: STACK (sentiment), HTTP_PORT (8080), SWARM_ADVERTISE_ADDR (127.0.0.1), SWARM_WAIT_S
# (300), COMPOSE (the Compose command that builds the images), MODEL_STORE (where `make mar` put
# sentiment.mar), APP, WORKERS, CANDIDATE_DIR, CHECK_DATA (deploy/switch-model.sh), and the stack file's variables (MEM_LIMIT_*, APP_REPLICAS,
# TORCHSERVE_REPLICAS).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
STACK="${STACK:-sentiment}"
HTTP_PORT="${HTTP_PORT:-8080}"
WAIT_S="${SWARM_WAIT_S:-300}"
# Set on the node by `up` when it created the swarm; `down` leaves such a swarm again.
CREATED_LABEL=sentiment.swarm-created-by-make

log() { echo "swarm: $*"; }
die() { echo "swarm: error: $*" >&2; exit 1; }

swarm_state() { docker info --format '{{.Swarm.LocalNodeState}}'; }
node_id() { docker info --format '{{.Swarm.NodeID}}'; }
stack_filter() { echo "label=com.docker.stack.namespace=$STACK"; }

ensure_swarm() {
    local state
    state="$(swarm_state)"
    if [ "$state" = inactive ]; then
        # The address must be given on a host with several interfaces; 127.0.0.1 makes a one-node
        # swarm that no other machine can join (set SWARM_ADVERTISE_ADDR for a real cluster).
        docker swarm init --advertise-addr "${SWARM_ADVERTISE_ADDR:-127.0.0.1}" >/dev/null
        docker node update --label-add "$CREATED_LABEL=true" "$(node_id)" >/dev/null
        log "initialised a one-node swarm (swarm-down leaves it again)"
    elif [ "$state" = active ]; then
        [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] \
            || die "this engine is a swarm worker: run this on a manager node"
        log "using the swarm this engine is in"
    else
        die "the engine's swarm state is '$state': fix it (docker swarm leave --force, or wait) and retry"
    fi
}

build_images() {
    # The three images exactly as Compose builds them (build args, targets: docker-compose.yml),
    # then the TorchServe image with the model archive in it.
    (cd "$root" && ${COMPOSE:-docker-compose} build torchserve app nginx)
    "$root/deploy/model-image/build.sh"
}

deploy() {
    local detach=()
    # Newer CLIs wait for convergence by default; this script waits itself (20.10 has no flag).
    if docker stack deploy --help 2>/dev/null | grep -q -- '--detach'; then detach=(--detach=true); fi
    # --resolve-image never: the images are local (or on every node); no registry is asked.
    HTTP_PORT="$HTTP_PORT" docker stack deploy "${detach[@]}" --resolve-image never \
        -c "$here/stack.yml" "$STACK"
}

# Every service of the stack runs as many tasks as it wants (its healthcheck passed).
converged() {
    local lines
    lines="$(docker service ls --filter "$(stack_filter)" --format '{{.Replicas}}')"
    [ -n "$lines" ] && ! awk -F'[/ ]' '$1 != $2 { bad = 1 } END { exit !bad }' <<<"$lines"
}

readyz_ok() {
    [ "$(curl -s -o /dev/null -m 3 -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/readyz")" = 200 ]
}

wait_serving() {
    local deadline=$((SECONDS + WAIT_S))
    until converged && readyz_ok; do
        if [ $SECONDS -ge $deadline ]; then
            docker stack ps --no-trunc "$STACK" >&2 || true
            die "the stack was not serving within $WAIT_S s (tasks above; docker service logs ${STACK}_torchserve)"
        fi
        sleep 1
    done
    docker service ls --filter "$(stack_filter)"
    log "ready: http://127.0.0.1:$HTTP_PORT/   (make swarm-down STACK=$STACK to remove it)"
}

cmd_up() {
    command -v curl >/dev/null || die "curl is needed to wait for the stack"
    ensure_swarm
    build_images
    deploy
    wait_serving
}

torchserve_containers() {
    docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_torchserve"
}

cmd_scale() {
    [ -n "${APP:-}${WORKERS:-}" ] || die "nothing to scale: give APP=N (facade replicas) and/or WORKERS=N (TorchServe workers)"
    if [ -n "${APP:-}" ]; then
        docker service scale --detach "${STACK}_app=$APP" >/dev/null
        log "facade replicas -> $APP"
    fi
    if [ -n "${WORKERS:-}" ]; then
        local containers container
        containers="$(torchserve_containers)"
        [ -n "$containers" ] || die "no running TorchServe container of stack $STACK on this node"
        # The management API is a Unix socket inside the container, on no network: ask it there
        # (tools/scale_workers.py is in the image and waits until the workers are READY).
        for container in $containers; do
            docker exec "$container" python -m tools.scale_workers "$WORKERS"
        done
    fi
    wait_serving
}

# The stack's model store on this node: a named volume that Docker filled from the model image's
# store when a TorchServe task first mounted it, and that the upgrade steps write.
model_store_volume() { echo "${STACK}_model-store"; }

# One tool step in a one-shot container that writes this node's model store, hardened as the
# Compose `upgrade` service is (no network, read-only root, no capabilities, the same limits).
cmd_store_step() {
    local image mounts=(--mount "type=volume,source=$(model_store_volume),target=/home/model-server/model-store")
    image="$(docker service inspect -f '{{.Spec.TaskTemplate.ContainerSpec.Image}}' "${STACK}_torchserve")" \
        || die "no service ${STACK}_torchserve: deploy the stack first (make swarm-up)"
    docker volume inspect "$(model_store_volume)" >/dev/null 2>&1 \
        || die "no volume $(model_store_volume) on this node: no TorchServe task of stack $STACK ran here"
    [ -z "${CANDIDATE_DIR:-}" ] || mounts+=(-v "$CANDIDATE_DIR:/candidate:ro")
    [ -z "${MODEL_DIR:-}" ] || mounts+=(-v "$MODEL_DIR:/model-source:ro" -e MODEL_DIR=/model-source)
    docker run --rm --network none --read-only --cap-drop ALL --security-opt no-new-privileges \
        --memory "${MEM_LIMIT_MODEL:-1g}" --pids-limit 256 \
        --tmpfs /tmp:size=64m,mode=1777 --tmpfs /home/model-server/tmp:size=64m,uid=10001,gid=10001,mode=0750 \
        "${mounts[@]}" --entrypoint python "${image%%@*}" -m tools.model_upgrade "$@"
}

cmd_switch() {
    local containers
    containers="$(torchserve_containers | tr '\n' ' ')"
    [ -n "${containers// /}" ] || die "no running TorchServe container of stack $STACK on this node"
    STORE_STEP="bash $here/swarm.sh store-step" TORCHSERVE_CONTAINERS="$containers" \
        bash "$root/deploy/switch-model.sh" "$@"
}

cmd_down() {
    if docker stack ls --format '{{.Name}}' 2>/dev/null | grep -qx "$STACK"; then
        docker stack rm "$STACK"
    fi
    # `stack rm` returns at once; tasks stop within their stop_grace_period, then the networks go.
    local deadline=$((SECONDS + 120)) left
    while :; do
        left="$(docker ps -aq --filter "$(stack_filter)")$(docker network ls -q --filter "$(stack_filter)")"
        [ -z "$left" ] && break
        [ $SECONDS -ge $deadline ] && die "stack $STACK still has containers or networks after 120 s: $left"
        sleep 1
    done
    # `stack rm` keeps volumes: the model store goes with the stack, so that the next `up` serves
    # the model of the image it deploys, not an older upgrade's.
    docker volume ls -q --filter "$(stack_filter)" | xargs -r docker volume rm >/dev/null
    log "stack $STACK removed"
    if [ "$(swarm_state)" = active ] \
        && [ "$(docker node inspect --format "{{index .Spec.Labels \"$CREATED_LABEL\"}}" self 2>/dev/null)" = true ]; then
        if [ -n "$(docker stack ls --format '{{.Name}}')" ]; then
            log "other stacks still run: the swarm that swarm-up created stays"
        else
            docker swarm leave --force >/dev/null
            log "left the swarm that swarm-up created"
        fi
    fi
}

cmd_status() {
    docker stack services "$STACK"
    docker stack ps "$STACK"
}

command="${1:-}"
case "$command" in
    up) cmd_up ;;
    scale) cmd_scale ;;
    down) cmd_down ;;
    status) cmd_status ;;
    model-upgrade | model-rollback) shift; cmd_switch "${command#model-}" "$@" ;;
    store-step) shift; cmd_store_step "$@" ;;
    *) die "usage: $0 up|scale|model-upgrade|model-rollback|down|status" ;;
esac
