// Every Azure role assignment of the pack, in one place. Names are guid(scope, principalId, roleId), so
// re-deploying is idempotent. The module is deployed twice from main.bicep because role assignments
// live at their target's scope:
//   - at the pack's resource group: storage, Key Vault, App Insights, Sentinel automation on the RG;
//   - at the Sentinel workspace's resource group: Sentinel Responder (function) and Reader (playbooks) on the workspace.
// Whatever a deployment does not pass (empty names / ids) is skipped.
// Graph and Defender for Endpoint API permissions are not Azure roles: infra/hooks/postprovision.sh.

@description('Principal (object) id of the function app\'s user-assigned identity.')
param functionPrincipalId string

param storageAccountName string = ''
param keyVaultName string = ''
param applicationInsightsName string = ''
param sentinelWorkspaceName string = ''

@description('Principal ids of the playbooks\' system-assigned identities (empty entries are skipped).')
param playbookPrincipalIds array = []

@description('Object id of the Azure Security Insights service principal in this tenant; empty = not granted here.')
param sentinelAutomationPrincipalId string = ''

// Built-in role definition ids (the same in every tenant).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6' // Key Vault Secrets User
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher
var sentinelResponder = '3e150937-b8fe-4cfb-8069-0eaf05ecd056' // Microsoft Sentinel Responder
var sentinelReader = '8d289c81-5878-46d4-8554-54e1e3d8b5cb' // Microsoft Sentinel Reader
var sentinelAutomationContributor = 'f4c81013-99ee-4d62-a7ee-b3f1f648599a' // Microsoft Sentinel Automation Contributor

var grantStorage = !empty(storageAccountName)
var grantKeyVault = !empty(keyVaultName)
var grantAppInsights = !empty(applicationInsightsName)
var grantSentinel = !empty(sentinelWorkspaceName)

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = if (grantStorage) {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = if (grantKeyVault) {
  name: keyVaultName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = if (grantAppInsights) {
  name: applicationInsightsName
}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = if (grantSentinel) {
  name: sentinelWorkspaceName
}

// --- Function identity: storage (AzureWebJobsStorage, deployment package, state tables and queues) ---

// Owner, not Contributor: the Functions host and the Flex deployment need blob leases and container management.
resource functionBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantStorage) {
  name: guid(storage.id, functionPrincipalId, storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource functionQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantStorage) {
  name: guid(storage.id, functionPrincipalId, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource functionTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantStorage) {
  name: guid(storage.id, functionPrincipalId, storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- Function identity: read secrets for Key Vault references (data plane, this vault only) ---

resource functionSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantKeyVault) {
  name: guid(vault.id, functionPrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- Function identity: send telemetry to App Insights with Entra auth (local auth is disabled) ---

resource functionMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantAppInsights) {
  name: guid(applicationInsights.id, functionPrincipalId, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- Sentinel workspace: the function writes comments/status/labels; playbooks only receive triggers and read ---

resource functionSentinelResponder 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantSentinel) {
  name: guid(workspace.id, functionPrincipalId, sentinelResponder)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', sentinelResponder)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Least privilege: the playbooks' Sentinel connection receives the trigger and, in the alert-trigger variants,
// reads the alert's incident ("Alert - Get incident"); every write goes through the function's identity.
resource playbookSentinelReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in (grantSentinel ? filter(playbookPrincipalIds, candidate => !empty(candidate)) : []): {
  name: guid(workspace.id, principalId, sentinelReader)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', sentinelReader)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

// --- Sentinel's own service principal may run the playbooks of this resource group (automation rules) ---

resource sentinelRunsPlaybooks 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(sentinelAutomationPrincipalId)) {
  name: guid(resourceGroup().id, sentinelAutomationPrincipalId, sentinelAutomationContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', sentinelAutomationContributor)
    principalId: sentinelAutomationPrincipalId
    principalType: 'ServicePrincipal'
  }
}
