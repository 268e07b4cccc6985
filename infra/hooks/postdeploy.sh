#!/bin/sh
# azd postdeploy hook: check the deployed app, then deploy the playbooks (second provision).
#
# The Logic Apps call the functions with the host's default function key, which Bicep reads with
# listKeys. A Flex Consumption host may serve no keys before it runs with code and can reach its
# storage (with role assignments made in the same provision), i.e. before the first `azd deploy`.
# So the first `azd up` provisions without playbooks (DEPLOY_PLAYBOOKS=false), deploys the code, and
# this hook then sets DEPLOY_PLAYBOOKS=true and runs `azd provision` once more. Later runs find
# DEPLOY_PLAYBOOKS=true and only check health.
# Manual equivalent: azd env set DEPLOY_PLAYBOOKS true && azd provision
set -eu

say() { printf '%s\n' "$*"; }

url="${AZURE_FUNCTION_URL:?AZURE_FUNCTION_URL is not set (run through azd)}"
attempts="${POSTDEPLOY_ATTEMPTS:-30}"
body=$(mktemp)
trap 'rm -f "$body"' EXIT

# 1. GET /api/health (anonymous; reports each setting as set/missing/invalid, never a value).
#    200 = healthy, 503 = running but degraded (e.g. a secret not set yet); anything else = not up yet.
status=000
i=0
while [ "$i" -lt "$attempts" ]; do
  status=$(curl -s -o "$body" -w '%{http_code}' --max-time 20 "$url/api/health" || true)
  case "$status" in
    200|503) break ;;
  esac
  i=$((i + 1))
  sleep 10
done
case "$status" in
  200) say "postdeploy: $url/api/health is healthy" ;;
  503) say "postdeploy: $url/api/health answers but is degraded:"; cat "$body"; say "" ;;
  *)   say "postdeploy: $url/api/health did not answer (last status $status); playbooks not deployed yet."
       say "  Check the app in Application Insights, then run: azd env set DEPLOY_PLAYBOOKS true && azd provision"
       exit 0 ;;
esac

if [ "${DEPLOY_PLAYBOOKS:-false}" = "true" ]; then
  exit 0
fi

# 2. The host now serves keys; check without printing one, then provision the playbooks.
i=0
until az functionapp keys list --resource-group "$AZURE_RESOURCE_GROUP" --name "$AZURE_FUNCTION_NAME" \
    --only-show-errors -o none 2>/dev/null; do
  i=$((i + 1))
  if [ "$i" -ge "$attempts" ]; then
    say "postdeploy: the function host serves no keys yet; run later: azd env set DEPLOY_PLAYBOOKS true && azd provision"
    exit 0
  fi
  sleep 10
done

say "postdeploy: deploying the playbooks (azd provision with DEPLOY_PLAYBOOKS=true)"
azd env set DEPLOY_PLAYBOOKS true
azd provision --no-prompt
