// Sentinel automation rules (in the existing Sentinel workspace) that run one playbook when an
// incident is created and/or updated, or, for an alert-trigger playbook, when an alert is created.
// Deployed at the workspace's resource group. An automation rule runs only playbooks whose trigger matches
// its own (incident or alert); entity-trigger playbooks cannot be run by automation rules (Microsoft Learn,
// "Supported triggers and actions in Microsoft Sentinel playbooks").

param workspaceName string
param playbookName string
param logicAppResourceId string

@description('What the rules trigger on: Incidents (an incident-trigger playbook), Alerts (an alert-trigger playbook); empty = no rule (an entity-trigger playbook).')
@allowed(['Incidents', 'Alerts', ''])
param triggersOn string = 'Incidents'

@description('Events that run the playbook: Created, Updated for incidents; Created for alerts.')
param triggersWhen array

@description('Order among the workspace\'s automation rules (lower runs first).')
param order int = 100

@description('Conditions of the Updated rule (infra/automation/*.json); [] = every update runs the playbook.')
param updateConditions array = []

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

// Alerts have no update event: only Created can run an alert-trigger playbook.
var events = triggersOn == 'Incidents' ? triggersWhen : (triggersOn == 'Alerts' ? intersection(triggersWhen, ['Created']) : [])

resource rules 'Microsoft.SecurityInsights/automationRules@2025-09-01' = [for event in events: {
  scope: workspace
  // Deterministic id: re-deploying updates the rule instead of adding another.
  name: guid(workspace.id, logicAppResourceId, event)
  properties: {
    displayName: 'sentinel-playbooks: run ${playbookName} on ${triggersOn == 'Alerts' ? 'alert' : 'incident'} ${toLower(event)}'
    order: order
    triggeringLogic: {
      isEnabled: true
      triggersOn: triggersOn
      triggersWhen: event
      conditions: triggersOn == 'Incidents' && event == 'Updated' ? updateConditions : []
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
