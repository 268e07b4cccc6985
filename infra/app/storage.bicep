// One storage account, reached only with Entra ID (shared keys off), for:
// - AzureWebJobsStorage (host keys, leases, timer and queue-trigger bookkeeping),
// - the Flex Consumption deployment package container,
// - the pack's state tables and work queues (core/state.py creates tables on first use).

param name string
param location string
param tags object = {}
param deploymentContainerName string

@description('Queues that queue triggers listen on; created here so the scale controller sees them before the first message.')
param queueNames array = []

@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_RAGRS'])
param skuName string = 'Standard_LRS'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // Flex Consumption without VNet integration reaches storage over its public endpoint; access is
  // Entra-only (shared keys off, no anonymous blobs, TLS 1.2), so the network rule stays open.
  // checkov:skip=CKV_AZURE_35:No VNet in this template: the Flex app reaches storage over the public endpoint; every request needs an Entra token (shared keys off).
  // checkov:skip=CKV_AZURE_59:Same as CKV_AZURE_35: a public endpoint is required without VNet integration; anonymous and shared-key access are off.
  // checkov:skip=CKV_AZURE_206:Replication is the skuName parameter (LRS by default): the account holds rebuildable state (caches, marks, deployment package); choose ZRS/GRS for production.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
