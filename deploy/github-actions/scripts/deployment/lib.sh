# shellcheck shell=bash
# Shared by the deployment scripts (sourced, not run). Every input arrives
# through the environment; each is checked against a narrow pattern before
# it reaches a command line, and only names, never secret values, are ever
# printed.

# AUTHORITYCTL: the binary the runner provisioning installed (Ansible
# runner-configure.yml puts it in /usr/local/bin). The authority endpoints
# and the runner's client certificate come from the runner's environment
# (AUTHORITY_ENDPOINTS, AUTHORITY_CACERT, AUTHORITY_CERT, AUTHORITY_KEY),
# written to the runner's .env by the same playbook.
AUTHORITYCTL="${AUTHORITYCTL:-authorityctl}"

die() {
	printf '%s: %s\n' "${0##*/}" "$*" >&2
	exit 2
}

# need NAME PATTERN: $NAME is set and matches the extended regexp PATTERN.
# The value is not printed when it does not match (it may be anything).
need() {
	local name=$1 pattern=$2 value
	value="${!name:-}"
	[[ -n "$value" ]] || die "$name is not set"
	[[ ${#value} -le 200 && "$value" =~ $pattern ]] || die "$name does not match $pattern"
}

deploy_env() {
	need DEPLOY_ENV '^[a-z][a-z0-9-]{0,31}$'
	DEPLOY_DOMAIN="deploy.${DEPLOY_ENV}"
}

# The repository-relative config files (the application repository keeps
# them under deploy/<environment>/); overridable.
config_paths() {
	PREFLIGHT_CONFIG="${PREFLIGHT_CONFIG:-deploy/${DEPLOY_ENV}/preflight.yaml}"
	GATES_CONFIG="${GATES_CONFIG:-deploy/${DEPLOY_ENV}/gates.yaml}"
	DEPLOY_INVENTORY="${DEPLOY_INVENTORY:-deploy/${DEPLOY_ENV}/hosts.yml}"
}

need_file() {
	[[ -f "$2" ]] || die "$1 $2 does not exist"
}
