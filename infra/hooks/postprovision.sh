#!/bin/sh
# azd postprovision hook: grant the function app's user-assigned identity the Microsoft Graph and
# Defender for Endpoint *application permissions* (app roles) its actions need. Azure RBAC roles are in
# infra/app/rbac.bicep; these are Entra ID app role assignments, made here with `az rest` against
# Microsoft Graph (POST /servicePrincipals/{id}/appRoleAssignments). Why each one: docs/permissions.md.
#
# Who can run it: a user signed in with `az login` who holds Privileged Role Administrator (or Global
# Administrator): assigning Microsoft Graph / first-party app roles is tenant-wide admin consent.
# Without that role the hook prints what is missing and lets `azd up` continue; a tenant admin can
# run it later:  azd hooks run postprovision   (or: AZURE_FUNCTION_PRINCIPAL_ID=<id> sh infra/hooks/postprovision.sh)
#
# Idempotent: roles already granted are left alone; nothing is ever removed.
# Optional: GRANT_MAIL_SEND=true adds Mail.Send (send as ANY mailbox: only if a feature needs email).
#           SKIP_API_PERMISSIONS=true skips this hook (permissions granted by another process).
set -eu

GRAPH_APP_ID=00000003-0000-0000-c000-000000000000      # Microsoft Graph
MDE_APP_ID=fc780465-2017-40d4-a0c5-307022471b92        # WindowsDefenderATP (Defender for Endpoint API)
SENTINEL_APP_ID=98785600-1bb7-4fb9-b9fa-19afe2c8a360   # Azure Security Insights (Sentinel automation)

# Least privilege, one line per action family (see docs/permissions.md).
# GroupMember.Read.All: APPROVERS may name groups (membership read through Graph).
# Domain.Read.All: the enrichment never sends the tenant's own domains to VirusTotal (INTERNAL_DOMAINS_FROM_GRAPH,
# GET /domains); without it every domain and URL is skipped.
GRAPH_ROLES="User.Read.All User.EnableDisableAccount.All User.RevokeSessions.All IdentityRiskyUser.ReadWrite.All GroupMember.Read.All Domain.Read.All"
if [ "${GRANT_MAIL_SEND:-false}" = "true" ]; then
  GRAPH_ROLES="$GRAPH_ROLES Mail.Send"
fi
MDE_ROLES="Machine.Read.All Machine.Isolate Ti.ReadWrite.All"

missing=""

say() { printf '%s\n' "$*"; }

if [ "${SKIP_API_PERMISSIONS:-false}" = "true" ]; then
  say "postprovision: SKIP_API_PERMISSIONS=true, Graph/Defender permissions not checked."
  exit 0
fi

principal_id="${AZURE_FUNCTION_PRINCIPAL_ID:-}"
if [ -z "$principal_id" ]; then
  say "postprovision: AZURE_FUNCTION_PRINCIPAL_ID is not set (run through azd, or export it)." >&2
  exit 1
fi

if ! az account show --only-show-errors >/dev/null 2>&1; then
  say "postprovision: the Azure CLI is not signed in (az login). Graph/Defender permissions were NOT granted;"
  say "               sign in and run: azd hooks run postprovision"
  exit 0
fi

assignments_uri="https://graph.microsoft.com/v1.0/servicePrincipals/$principal_id/appRoleAssignments"

# grant <resource app id> <display name> <role> [<role> ...]
grant() {
  app_id=$1
  label=$2
  shift 2
  resource_id=$(az ad sp show --id "$app_id" --query id -o tsv --only-show-errors 2>/dev/null || true)
  if [ -z "$resource_id" ]; then
    say "  ! $label: no service principal in this tenant (is the product licensed/onboarded?); skipped: $*"
    missing="$missing $*"
    return 0
  fi
  # "<value>\t<id>" for every app role that an application (not a user) can hold.
  roles=$(az ad sp show --id "$app_id" --only-show-errors \
    --query "appRoles[?contains(allowedMemberTypes, 'Application')].[value, id]" -o tsv)
  granted=$(az rest --method GET --uri "$assignments_uri" --only-show-errors \
    --query "value[?resourceId=='$resource_id'].appRoleId" -o tsv 2>/dev/null || true)
  for role in "$@"; do
    role_id=$(printf '%s\n' "$roles" | awk -F '\t' -v r="$role" '$1 == r { print $2 }')
    if [ -z "$role_id" ]; then
      say "  ! $label $role: not offered by this tenant's $label service principal"
      missing="$missing $role"
      continue
    fi
    if printf '%s\n' "$granted" | grep -qi "$role_id"; then
      say "  = $label $role"
      continue
    fi
    body=$(printf '{"principalId":"%s","resourceId":"%s","appRoleId":"%s"}' "$principal_id" "$resource_id" "$role_id")
    if az rest --method POST --uri "$assignments_uri" --headers "Content-Type=application/json" \
        --body "$body" --only-show-errors -o none 2>/dev/null; then
      say "  + $label $role"
    else
      say "  ! $label $role: assignment refused (needs Privileged Role Administrator or Global Administrator)"
      missing="$missing $role"
    fi
  done
}

say "postprovision: application permissions of the function identity $principal_id"
grant "$GRAPH_APP_ID" "Microsoft Graph" $GRAPH_ROLES
grant "$MDE_APP_ID" "WindowsDefenderATP" $MDE_ROLES

if [ -n "$missing" ]; then
  say ""
  say "postprovision: NOT granted:$missing"
  say "  The actions that need them answer 403 until a tenant admin runs: azd hooks run postprovision"
  say "  (enrichment, notifications and approvals do not need them)."
fi

# Reminders for the Azure-side Sentinel wiring that the next provision can do (docs/deploy.md).
if [ -z "${SENTINEL_WORKSPACE_ID:-}" ]; then
  say "postprovision: SENTINEL_WORKSPACE_ID is not set: no Sentinel roles for the function or the playbooks."
  say "  azd env set SENTINEL_WORKSPACE_ID /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.OperationalInsights/workspaces/<name>"
fi
if [ -z "${SENTINEL_AUTOMATION_PRINCIPAL_ID:-}" ]; then
  say "postprovision: SENTINEL_AUTOMATION_PRINCIPAL_ID is not set: Sentinel cannot run these playbooks from"
  say "  automation rules until it holds Microsoft Sentinel Automation Contributor on this resource group:"
  say "  azd env set SENTINEL_AUTOMATION_PRINCIPAL_ID \$(az ad sp show --id $SENTINEL_APP_ID --query id -o tsv)"
fi
exit 0
