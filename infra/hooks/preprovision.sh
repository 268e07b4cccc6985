#!/bin/sh
# azd preprovision hook: decide what the next provision needs before ARM sees it.
#
# 1. Key Vault after `azd down`: the vault has purge protection, so a deleted vault keeps its name for 90
#    days and a new vault of the same name fails. If this environment's vault (tag azd-env-name) is
#    soft-deleted, KEY_VAULT_CREATE_MODE=recover brings it back (secrets set directly in it included);
#    otherwise default. Needs Key Vault Contributor/Owner rights, which the deployer has.
# 2. CREATE_AUTOMATION_RULES=true needs the object id of Sentinel's own service principal ("Azure Security
#    Insights", app id 98785600-1bb7-4fb9-b9fa-19afe2c8a360): looked up here when not set; if it cannot be
#    found, stop now with the reason instead of failing half-way through the deployment.
set -eu

say() { printf '%s\n' "$*"; }
SENTINEL_APP_ID=98785600-1bb7-4fb9-b9fa-19afe2c8a360

if ! az account show --only-show-errors >/dev/null 2>&1; then
  say "preprovision: the Azure CLI is not signed in (az login): Key Vault recovery and the Sentinel principal are not checked."
  exit 0
fi

# 1. A soft-deleted vault of this environment?
mode=default
deleted=$(az keyvault list-deleted --resource-type vault --only-show-errors \
  --query "[?properties.tags.\"azd-env-name\"=='${AZURE_ENV_NAME:-}' && properties.location=='${AZURE_LOCATION:-}'].name | [0]" \
  -o tsv 2>/dev/null || true)
if [ -n "$deleted" ]; then
  mode=recover
  say "preprovision: Key Vault $deleted of this environment is soft-deleted: this provision recovers it."
fi
azd env set KEY_VAULT_CREATE_MODE "$mode"

# 2. Sentinel's service principal for automation rules.
if [ "${CREATE_AUTOMATION_RULES:-false}" = "true" ] && [ -z "${SENTINEL_AUTOMATION_PRINCIPAL_ID:-}" ]; then
  principal=$(az ad sp show --id "$SENTINEL_APP_ID" --query id -o tsv --only-show-errors 2>/dev/null || true)
  if [ -z "$principal" ]; then
    say "preprovision: CREATE_AUTOMATION_RULES=true, but the 'Azure Security Insights' service principal"
    say "  ($SENTINEL_APP_ID) cannot be read in this tenant: Sentinel could not run the playbooks from the rules."
    say "  Either set it:   azd env set SENTINEL_AUTOMATION_PRINCIPAL_ID <object id>"
    say "  or turn rules off: azd env set CREATE_AUTOMATION_RULES false"
    exit 1
  fi
  azd env set SENTINEL_AUTOMATION_PRINCIPAL_ID "$principal"
  say "preprovision: SENTINEL_AUTOMATION_PRINCIPAL_ID = $principal (Azure Security Insights)"
fi
exit 0
