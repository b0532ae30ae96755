#!/usr/bin/env bash
# Health gates (seed 002 AC4).
#
#   health-gates.sh            run the gates of GATES_CONFIG now
#                              (`authorityctl gate`: API /health, PostgreSQL,
#                              Redis, smoke tests; 5 min per service by
#                              default). The on-call's manual re-check.
#   health-gates.sh --summary  do not probe: print the deploy record of
#                              deploy.$DEPLOY_ENV (status, holder, epoch,
#                              gate results, failovers) and append it to
#                              the job summary. The workflow's third step:
#                              `deploy run` already ran the gates under the
#                              deploy lock and recorded their outcome.
#
# Environment: DEPLOY_ENV (required), GATES_CONFIG, AUTHORITYCTL; for the
# summary HAS_* booleans (secret presence) are listed by name.
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

deploy_env
config_paths

case "${1:-}" in
"")
	need_file gates "$GATES_CONFIG"
	exec "$AUTHORITYCTL" gate --config "$GATES_CONFIG"
	;;
--summary) ;;
*) die "usage: ${0##*/} [--summary]" ;;
esac

record="$(mktemp)"
trap 'rm -f "$record"' EXIT
status=0
"$AUTHORITYCTL" -o json domain get "$DEPLOY_DOMAIN" >"$record" || status=$?

{
	printf '### Deploy record of %s\n\n' "$DEPLOY_DOMAIN"
	printf 'Secrets present:'
	for var in $(compgen -v HAS_); do
		case "${!var}" in
		true | false) printf ' %s=%s' "${var#HAS_}" "${!var}" ;;
		*) printf ' %s=?' "${var#HAS_}" ;;
		esac
	done
	printf '\n\n```json\n'
	# Bounded: the job summary takes at most 1 MiB per step.
	head -c 65536 "$record"
	printf '\n```\n'
} | tee -a "${GITHUB_STEP_SUMMARY:-/dev/null}"
exit "$status"
