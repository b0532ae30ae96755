#!/usr/bin/env bash
# Example deploy command for `authorityctl deploy run` (replace with the
# application's own). It runs under the deploy lock with AUTHORITY_DOMAIN,
# AUTHORITY_EPOCH and AUTHORITY_DEPLOY_ID in its environment, may be run
# again by a standby that took over (so every step is idempotent), and may
# be killed (SIGTERM, then SIGKILL) when the lease cannot be renewed.
#
# No duplicate deployment: each target refuses work from a lower epoch.
# `authorityctl fence --state FILE` keeps the highest epoch seen in a file on
# the target and fails for a lower one (airtight for a target that checks
# before every change); `authorityctl fence` without --state only asks the
# authority whether the epoch is still current (narrows the window, does
# not close it). docs/runbooks/runner-failover.md explains both.
set -euo pipefail

: "${AUTHORITY_DOMAIN:?run me through authorityctl deploy run}"
: "${AUTHORITY_EPOCH:?run me through authorityctl deploy run}"
: "${AUTHORITY_DEPLOY_ID:?run me through authorityctl deploy run}"

# Before every step that changes a target: still the holder?
authorityctl fence --domain "$AUTHORITY_DOMAIN" --epoch "$AUTHORITY_EPOCH"

# Application-specific, idempotent deploy steps go here, each passing
# AUTHORITY_EPOCH to the target so that it can refuse a deposed runner, for
# example:
#   ssh deploy@target "authorityctl fence --domain $AUTHORITY_DOMAIN \
#     --epoch $AUTHORITY_EPOCH --state /var/lib/app/deploy-epoch && \
#     docker compose pull && docker compose up -d"
printf 'deployed %s at epoch %s\n' "$AUTHORITY_DEPLOY_ID" "$AUTHORITY_EPOCH"
