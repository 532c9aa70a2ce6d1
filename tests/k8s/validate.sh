#!/usr/bin/env bash
# Checks the manifests in deploy/k8s against the Kubernetes API schemas,
# offline: kubernetes-validate ships the schemas of each Kubernetes version
# it supports. It is installed from PyPI into a virtual environment kept in
# $DOWNPOUR_CACHE (default ~/.cache/downpour).
set -euo pipefail
cd "$(dirname "$0")/../.."

kubernetes_version=${DOWNPOUR_K8S_VERSION:-1.30}
venv=${DOWNPOUR_CACHE:-$HOME/.cache/downpour}/k8s-validate-venv
if [[ ! -x $venv/bin/kubernetes-validate ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi

# kustomization.yaml configures kubectl and is no API object.
manifests=()
for file in deploy/k8s/*.yaml; do
  [[ $(basename "$file") == kustomization.yaml ]] || manifests+=("$file")
done
# --strict rejects fields the schema does not know, such as a misspelled key.
"$venv/bin/kubernetes-validate" --strict --kubernetes-version "$kubernetes_version" "${manifests[@]}"
echo "k8s manifests: ${#manifests[@]} files valid for Kubernetes $kubernetes_version"
