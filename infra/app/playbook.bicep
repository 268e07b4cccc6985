// One Consumption Logic App (a Sentinel playbook). Its workflow definition comes from
// infra/playbooks/<name>.json, written for the Microsoft Sentinel incident trigger. With `trigger` alert or
// entity, this module deploys the same definition behind that trigger instead (see "Trigger variants" below).
// It supplies the definition's parameters:
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

@description('The Sentinel trigger of this Logic App: incident (the definition as written), alert or entity.')
@allowed(['incident', 'alert', 'entity'])
param trigger string = 'incident'

@description('With trigger entity: the entity type Sentinel offers the playbook for (a key of entityKinds in infra/playbooks/triggers/entity.json: IP, Host, Account, ...).')
param entityType string = ''

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

// --- Trigger variants ---
// The trigger shapes of Microsoft's own Sentinel playbook templates (each file cites its sources). A definition reads
// its incident trigger only through two expressions, `body` (the whole trigger body, which it forwards to the function)
// and `incidentArmId` (the incident's ARM id); tools/playbook_check.py refuses any other use. A variant swaps both
// for its trigger's own and takes that trigger. The alert variant first runs "Alert - Get incident" and then the
// definition's actions in a Scope, so they run only once the alert's incident is known; the function receives the
// alert with `incidentArmId` added. tools/playbook_check.py builds the same variants to check and run them offline.
var triggerShapes = {
  incident: loadJsonContent('../playbooks/triggers/incident.json')
  alert: loadJsonContent('../playbooks/triggers/alert.json')
  entity: loadJsonContent('../playbooks/triggers/entity.json')
}
var shape = triggerShapes[trigger]
var variantActions = json(replace(replace(string(definition.actions), '"${triggerShapes.incident.body}"', '"${shape.body}"'), triggerShapes.incident.incidentArmId, shape.incidentArmId))
var variantDefinition = {
  '$schema': definition['$schema']
  contentVersion: definition.contentVersion
  parameters: definition.parameters
  triggers: json(replace(string(shape.triggers), '{entityType}', entityType))
  actions: empty(shape.scope) ? variantActions : union(shape.actions, {
    '${shape.scope}': {
      type: 'Scope'
      runAfter: shape.scopeRunAfter
      actions: variantActions
    }
  })
  outputs: definition.?outputs ?? {}
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
    definition: trigger == 'incident' ? definition : variantDefinition
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
