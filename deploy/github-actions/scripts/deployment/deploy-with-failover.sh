#!/usr/bin/env bash
# Deploy with runner-group failover (seed 002 AC2): run on both runner
# groups at once, `primary` on one and `secondary` on the other.
#
#   deploy-with-failover.sh primary|secondary
#
# `authorityctl deploy run` takes the deploy lock of the domain
# deploy.$DEPLOY_ENV: the primary at once, the secondary (hot standby) only
# when the primary's lease expired or it handed off. The holder runs the
# preflight (PREFLIGHT_CONFIG), then DEPLOY_COMMAND (default ./deploy.sh)
# with AUTHORITY_DOMAIN, AUTHORITY_EPOCH and AUTHORITY_DEPLOY_ID in its
# environment (the command fences its targets with that epoch), then the
# health gates (GATES_CONFIG; failing gates mark the deploy failed, emit
# deploy.rollback_required and post to ALERT_WEBHOOK). Both runners exit
# with the domain's outcome. DEPLOY_RETRY=true re-runs a deploy id whose
# last attempt failed; a succeeded deploy id is a no-op.
#
# Environment: DEPLOY_ENV, DEPLOY_RELEASE, DEPLOY_RUNNER_GROUP (required);
# DEPLOY_RETRY, DEPLOY_COMMAND, PREFLIGHT_CONFIG, GATES_CONFIG,
# ALERT_WEBHOOK (a secret: only ever passed on, never printed),
# AUTHORITYCTL.
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 1 ]] || die "usage: ${0##*/} primary|secondary"
role=$1
[[ "$role" == primary || "$role" == secondary ]] || die "role must be primary or secondary"

deploy_env
config_paths
need DEPLOY_RELEASE '^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}$'
need DEPLOY_RUNNER_GROUP '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'
need_file preflight "$PREFLIGHT_CONFIG"
need_file gates "$GATES_CONFIG"
command="${DEPLOY_COMMAND:-./deploy.sh}"
[[ -x "$command" ]] || die "deploy command $command is not an executable file"

args=(deploy run
	--domain "$DEPLOY_DOMAIN"
	--env "$DEPLOY_ENV"
	--release "$DEPLOY_RELEASE"
	--role "$role"
	--runner-group "$DEPLOY_RUNNER_GROUP"
	--preflight "$PREFLIGHT_CONFIG"
	--gates "$GATES_CONFIG")
if [[ -n "${ALERT_WEBHOOK:-}" ]]; then
	args+=(--alert-webhook "$ALERT_WEBHOOK")
fi
case "${DEPLOY_RETRY:-false}" in
true) args+=(--retry) ;;
false) ;;
*) die "DEPLOY_RETRY must be true or false" ;;
esac

printf 'deploy %s of %s as %s on runner group %s (domain %s)\n' \
	"$DEPLOY_RELEASE" "$DEPLOY_ENV" "$role" "$DEPLOY_RUNNER_GROUP" "$DEPLOY_DOMAIN"
exec "$AUTHORITYCTL" "${args[@]}" -- "$command"
