// Sentinel automation rules (in the existing Sentinel workspace) that run one playbook when an
// incident is created and/or updated. Deployed at the workspace's resource group.

param workspaceName string
param playbookName string
param logicAppResourceId string

@description('Incident events that run the playbook: Created, Updated.')
param triggersWhen array

@description('Order among the workspace\'s automation rules (lower runs first).')
param order int = 100

@description('Conditions of the Updated rule (infra/automation/*.json); [] = every update runs the playbook.')
param updateConditions array = []

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource rules 'Microsoft.SecurityInsights/automationRules@2025-09-01' = [for event in triggersWhen: {
  scope: workspace
  // Deterministic id: re-deploying updates the rule instead of adding another.
  name: guid(workspace.id, logicAppResourceId, event)
  properties: {
    displayName: 'sentinel-playbooks: run ${playbookName} on incident ${toLower(event)}'
    order: order
    triggeringLogic: {
      isEnabled: true
      triggersOn: 'Incidents'
      triggersWhen: event
      conditions: event == 'Updated' ? updateConditions : []
    }
    actions: [
      {
        order: 1
        actionType: 'RunPlaybook'
        actionConfiguration: {
          logicAppResourceId: logicAppResourceId
          tenantId: tenant().tenantId
        }
      }
    ]
  }
}]
