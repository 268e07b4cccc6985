#!/bin/sh
# azd postdeploy hook: check the deployed app, create the function-level keys, and let the next provision
# deploy the playbooks. Every step says what it does; none starts another azd command.
#
# 1. GET /api/health (anonymous: {"status": "ok" | "degraded"}), until the new code answers.
# 2. The sign-in the approval pages need (docs/deploy.md, "Sign-in"). SIGN_IN_MODE=app (the default): GET
#    /api/auth/login answers 302 to Entra ID's authorize endpoint, and App Service Authentication is off
#    (/.auth/me 404). SIGN_IN_MODE=easyauth: GET /.auth/me answers 401 (200 when signed in), 404 when it is not.
# 3. The host's keys: a Flex Consumption host serves keys only once it runs with code.
# 4. Function-level keys (issue 14.3): `servicenow` for sync/servicenow/inbound (ServiceNow's business rule)
#    and `firewall` for response/blocklist (firewalls polling the block list). On Flex Consumption a
#    function-level key can only be made once the function exists, i.e. now. Each key is created once and
#    kept in Key Vault (function-key-servicenow, function-key-firewall) through Azure Resource Manager, so no
#    Key Vault data role is needed and the value never appears on a command line or in the azd environment.
#    Neither key opens any other route; the host key stays with the Logic Apps.
# 5. DEPLOY_PLAYBOOKS=true: azure.yaml's `workflows.up` runs provision once more after deploy, which now
#    deploys the Logic Apps (they read the host key with listKeys). After a plain `azd deploy`, run
#    `azd provision` yourself; the hook prints it.
set -eu

say() { printf '%s\n' "$*"; }

url="${AZURE_FUNCTION_URL:?AZURE_FUNCTION_URL is not set (run through azd)}"
group="${AZURE_RESOURCE_GROUP:?AZURE_RESOURCE_GROUP is not set}"
app="${AZURE_FUNCTION_NAME:?AZURE_FUNCTION_NAME is not set}"
vault="${AZURE_KEYVAULT_NAME:-}"
attempts="${POSTDEPLOY_ATTEMPTS:-30}"
body=$(mktemp)
trap 'rm -f "$body"' EXIT

# 1. Health.
status=000
i=0
while [ "$i" -lt "$attempts" ]; do
  status=$(curl -s -o "$body" -w '%{http_code}' --max-time 20 "$url/api/health" || true)
  case "$status" in
    200|503) break ;;
  esac
  i=$((i + 1))
  say "postdeploy: waiting for $url/api/health (attempt $i/$attempts, last HTTP $status)"
  sleep 10
done
case "$status" in
  200) say "postdeploy: $url/api/health is ok" ;;
  503) say "postdeploy: $url/api/health answers degraded; details (function key): $url/api/health/details" ;;
  *)   say "postdeploy: $url/api/health did not answer (last HTTP $status): check the app in Application Insights."
       say "  Then: azd hooks run postdeploy"
       exit 0 ;;
esac

# 2. The sign-in.
if [ -n "${SIGN_IN_CLIENT_ID:-}" ]; then
  auth=$(curl -s -o /dev/null -w '%{http_code}' --max-time 20 "$url/.auth/me" || true)
  if [ "${SIGN_IN_MODE:-app}" = "easyauth" ]; then
    case "$auth" in
      401|200) say "postdeploy: App Service Authentication answers at $url/.auth/me (HTTP $auth)" ;;
      *) say "postdeploy: WARNING: $url/.auth/me answered HTTP $auth: App Service Authentication is not in front of"
         say "  the app, so approval and ask-user pages refuse to decide (APPROVAL_REQUIRE_SIGN_IN). See docs/deploy.md, Sign-in." ;;
    esac
  else
    login=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' --max-time 20 \
      "$url/api/auth/login?redirect=%2Fapi%2Fhealth" || true)
    case "$login" in
      "302 https://"*"/oauth2/v2.0/authorize?"*) say "postdeploy: the app's own sign-in sends browsers to Entra ID ($url/api/auth/login)" ;;
      *) say "postdeploy: WARNING: $url/api/auth/login answered '${login%% *}', not a redirect to Entra ID: approval and"
         say "  ask-user pages cannot sign anyone in. Check SIGN_IN_CLIENT_ID and SIGN_IN_AUTHORITY (docs/deploy.md, Sign-in)." ;;
    esac
    case "$auth" in
      404|000|'') ;;
      *) say "postdeploy: note: App Service Authentication answers too ($url/.auth/me: HTTP $auth). The app ignores its"
         say "  header with SIGN_IN_MODE=app; turn it off: az webapp auth update -g $group -n $app --enabled false" ;;
    esac
  fi
fi

# 3. The host serves keys (checked without printing one).
i=0
until az functionapp keys list --resource-group "$group" --name "$app" --only-show-errors -o none 2>/dev/null; do
  i=$((i + 1))
  if [ "$i" -ge "$attempts" ]; then
    say "postdeploy: the function host serves no keys yet; later: azd hooks run postdeploy && azd provision"
    exit 0
  fi
  say "postdeploy: waiting for the function host's keys (attempt $i/$attempts)"
  sleep 10
done

# 4. Function-level keys, kept in Key Vault.
subscription=$(az account show --query id -o tsv --only-show-errors)
secret_file=$(mktemp)
trap 'rm -f "$body" "$secret_file"' EXIT
chmod 600 "$secret_file"
function_key() {  # function_key <function name> <key name>
  fn=$1
  key=$2
  value=$(az functionapp function keys list -g "$group" -n "$app" --function-name "$fn" \
    --query "$key" -o tsv --only-show-errors 2>/dev/null || true)
  if [ -z "$value" ]; then
    value=$(az functionapp function keys set -g "$group" -n "$app" --function-name "$fn" --key-name "$key" \
      --query value -o tsv --only-show-errors 2>/dev/null || true)
    [ -n "$value" ] && say "postdeploy: created function key '$key' of $fn"
  else
    say "postdeploy: function key '$key' of $fn exists"
  fi
  if [ -z "$value" ]; then
    say "postdeploy: could not read or create function key '$key' of $fn (does the function exist?)"
    return 0
  fi
  if [ -n "$vault" ]; then
    printf '{"properties":{"value":"%s","contentType":"function key of %s"}}' "$value" "$fn" > "$secret_file"
    if az rest --method PUT --only-show-errors -o none \
        --uri "https://management.azure.com/subscriptions/$subscription/resourceGroups/$group/providers/Microsoft.KeyVault/vaults/$vault/secrets/function-key-$key?api-version=2023-07-01" \
        --headers "Content-Type=application/json" --body "@$secret_file"; then
      say "postdeploy: function key '$key' kept in Key Vault $vault as function-key-$key"
    else
      say "postdeploy: could not write function-key-$key to Key Vault $vault"
    fi
  fi
  value=""
}
function_key servicenow_inbound servicenow
function_key ip_blocklist firewall

# 5. Playbooks with the next provision.
if [ "${DEPLOY_PLAYBOOKS:-false}" != "true" ]; then
  azd env set DEPLOY_PLAYBOOKS true
  say "postdeploy: DEPLOY_PLAYBOOKS=true. azd up's workflow provisions once more now and deploys the playbooks;"
  say "  after a plain 'azd deploy', run: azd provision"
fi
exit 0
