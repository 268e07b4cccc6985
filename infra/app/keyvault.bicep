// Key Vault (RBAC authorisation) for the pack's secrets. A secret is written only when its value is
// given (azd env set ...); an empty value leaves the vault untouched, so a secret set directly in the
// vault (az keyvault secret set) survives the next `azd provision`. Values never leave this module.

param name string
param location string
param tags object = {}
param logAnalyticsWorkspaceId string

@description('Secret name -> value. Empty values are skipped.')
@secure()
param secretValues object = {}

@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('default, or recover: bring back the soft-deleted vault of the same name (after azd down; the preprovision hook decides).')
@allowed(['default', 'recover'])
param createMode string = 'default'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    // checkov:skip=CKV_AZURE_109:No VNet: Key Vault references of a Flex app without VNet integration resolve over the public endpoint; access is RBAC-only (Key Vault Secrets User for the app identity).
    // checkov:skip=CKV_AZURE_189:Same reason as CKV_AZURE_109: public network access is needed without VNet integration; no access policies, RBAC only.
    tenantId: tenant().tenantId
    // With purge protection a deleted vault keeps its name for softDeleteRetentionInDays: `azd down` then
    // `azd up` recovers it (with the secrets set directly in it) instead of failing on the taken name.
    createMode: createMode
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    // Deleted secrets stay recoverable and cannot be purged early, even by an owner (irreversible).
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource secrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for secret in filter(items(secretValues), candidate => !empty(candidate.value)): {
  parent: vault
  name: secret.key
  properties: {
    // checkov:skip=CKV_AZURE_41:Third-party credentials (VirusTotal, ServiceNow, webhooks) expire when their issuer says so; a vault-side expiry would silently break the integration. Rotate with azd env set + azd provision.
    value: secret.value
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}]

// Who read which secret, and every denied attempt, lands in the pack's Log Analytics workspace.
resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
