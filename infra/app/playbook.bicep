// One Consumption Logic App (a Sentinel playbook). Its workflow definition comes from
// infra/playbooks/<name>.json; this module only supplies the definition's parameters:
//   $connections     the azuresentinel connection, authenticated with this Logic App's identity
//   functionBaseUrl  https://<function app host>
//   functionKey      the function app's default host key (listKeys), sent as x-functions-key
//   + the entry's own `parameters` in main.bicep's registry (e.g. approvalTimeout), only those it declares
// The key is read here, at deployment time, and is never a module output.

param name string
param location string
param tags object = {}

@description('Workflow definition object (loadJsonContent of infra/playbooks/<name>.json).')
param definition object

param functionAppName string
param sentinelConnectionId string
param sentinelConnectionName string
param sentinelApiId string
param logAnalyticsWorkspaceId string

@description('The definition\'s own parameters ({name: {value: ...}}), from its registry entry in main.bicep.')
param definitionParameters object = {}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

// What every playbook gets; a definition's own parameters come from its registry entry (definitionParameters).
var baseParameters = {
  '$connections': {
    value: {
      azuresentinel: {
        connectionId: sentinelConnectionId
        connectionName: sentinelConnectionName
        id: sentinelApiId
        connectionProperties: {
          authentication: {
            type: 'ManagedServiceIdentity'
          }
        }
      }
    }
  }
  functionBaseUrl: {
    value: 'https://${functionApp.properties.defaultHostName}'
  }
  functionKey: {
    value: listKeys('${functionApp.id}/host/default', '2024-04-01').functionKeys.default
  }
}

resource workflow 'Microsoft.Logic/workflows@2019-05-01' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    state: 'Enabled'
    definition: definition
    parameters: union(baseParameters, definitionParameters)
  }
}

// Run history (trigger and action status, durations) in the pack's Log Analytics workspace.
resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'runtime-to-log-analytics'
  scope: workflow
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'WorkflowRuntime'
        enabled: true
      }
    ]
  }
}

output id string = workflow.id
output name string = workflow.name
output principalId string = workflow.identity.principalId
