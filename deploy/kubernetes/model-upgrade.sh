#!/usr/bin/env bash
# Kubernetes (overlays/model-store): the checked model switch of every TorchServe pod, the steps of
# deploy/switch-model.sh that Compose and Swarm run (`make k8s-model-upgrade` / `k8s-model-rollback`).
#
#   model-upgrade.sh upgrade ARCHIVE [tool options]    a .mar built on this machine (`make mar`)
#   model-upgrade.sh rollback [tool options]
#
# The management steps run in each TorchServe pod with `kubectl exec` (the API is a Unix socket
# there); the store's steps in the model-store-tools pod, the one that mounts the store's claim
# writable, scaled to 1 for the switch and back to 0 after it. The archive is streamed into that
# pod's /tmp. Environment: NAMESPACE (sentiment), CHECK_DATA (deploy/switch-model.sh), and kubectl's
# own (KUBECONFIG, the current context).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
NAMESPACE="${NAMESPACE:-sentiment}"
TOOLS=deploy/model-store-tools

kube() { kubectl -n "$NAMESPACE" "$@"; }
die() { echo "k8s-model-upgrade: error: $*" >&2; exit 1; }

command="${1:-}"
case "$command" in
    replica-exec)
        # REPLICA_EXEC for switch-model.sh: `replica-exec [-i] POD COMMAND...`, as docker exec takes it.
        shift
        stdin=()
        if [ "$1" = -i ]; then stdin=(-i); shift; fi
        pod="$1"
        shift
        exec kubectl -n "$NAMESPACE" exec "${stdin[@]}" "$pod" -c torchserve -- "$@"
        ;;
    store-step)
        shift
        exec kubectl -n "$NAMESPACE" exec "$TOOLS" -c tools -- python -m tools.model_upgrade "$@"
        ;;
    upgrade)
        archive="${2:-}"
        [ -f "$archive" ] || die "give the new model's archive: upgrade ARCHIVE (make mar MODEL_STORE=... builds one)"
        shift 2
        ;;
    rollback) shift ;;
    *) die "usage: $0 upgrade ARCHIVE|rollback [tool options]" ;;
esac

kube get "$TOOLS" >/dev/null || die "no $TOOLS in namespace $NAMESPACE: apply deploy/kubernetes/overlays/model-store"
pods="$(kube get pods -l app.kubernetes.io/name=torchserve --field-selector=status.phase=Running -o name | tr '\n' ' ')"
[ -n "${pods// /}" ] || die "no running TorchServe pod in namespace $NAMESPACE"

kube scale "$TOOLS" --replicas=1 >/dev/null
trap 'kube scale "$TOOLS" --replicas=0 >/dev/null' EXIT
kube rollout status "$TOOLS" --timeout=300s >/dev/null
options=()
if [ "$command" = upgrade ]; then
    kube exec -i "$TOOLS" -c tools -- sh -c 'cat >/tmp/candidate.mar' <"$archive"
    options=(--archive /tmp/candidate.mar)
fi
STORE_STEP="bash $here/model-upgrade.sh store-step" REPLICA_EXEC="bash $here/model-upgrade.sh replica-exec" \
    TORCHSERVE_CONTAINERS="$pods" bash "$here/../switch-model.sh" "$command" "${options[@]}" "$@"
