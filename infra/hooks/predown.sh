#!/bin/sh
# azd predown hook: the next `azd up` of this environment starts from an empty resource group, whose new
# function host has no keys until code is deployed, so the first provision must not deploy the playbooks
# (they read the host key with listKeys). The Key Vault is soft-deleted by `azd down` and recovered by the
# next provision (infra/hooks/preprovision.sh).
set -eu
azd env set DEPLOY_PLAYBOOKS false
printf '%s\n' "predown: DEPLOY_PLAYBOOKS=false for the next azd up; the Key Vault stays soft-deleted (purge protection) and is recovered by the next provision."
