#!/usr/bin/env bash
# Preflight on this runner (seed 002 AC3): CPU, memory, free disk, Docker
# daemon, TCP reachability of every host of the deploy inventory, and the
# presence (names only) of the secrets listed in REQUIRED_SECRETS. A thin
# wrapper over `authorityctl preflight`; its JSON report goes to
# PREFLIGHT_REPORT (default $RUNNER_TEMP/preflight.json). Exit 0 only when
# every check passes.
#
# Environment: DEPLOY_ENV (required), REQUIRED_SECRETS (space-separated
# variable names), DEPLOY_INVENTORY, PREFLIGHT_REPORT, AUTHORITYCTL.
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

deploy_env
config_paths
need_file inventory "$DEPLOY_INVENTORY"
report="${PREFLIGHT_REPORT:-${RUNNER_TEMP:-/tmp}/preflight.json}"

args=(preflight --inventory "$DEPLOY_INVENTORY" --report "$report")
read -r -a secrets <<<"${REQUIRED_SECRETS:-}"
[[ ${#secrets[@]} -le 64 ]] || die "REQUIRED_SECRETS names more than 64 variables"
for name in "${secrets[@]}"; do
	[[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]{0,63}$ ]] || die "REQUIRED_SECRETS holds an invalid variable name"
	args+=(--require-secret "$name")
done

printf 'preflight for %s (%d required secrets, report %s)\n' "$DEPLOY_ENV" "${#secrets[@]}" "$report"
exec "$AUTHORITYCTL" "${args[@]}"
