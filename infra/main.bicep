// sentinel-playbooks: what `azd up` deploys.
//
//   resource group rg-<env>
//     id-...        user-assigned identity of the function app
//     st...         storage (Entra-only): AzureWebJobsStorage, deployment package, state tables/queues
//     kv-...        Key Vault (RBAC): VirusTotal key, ServiceNow credentials, webhooks, approval key
//     log-/appi-... Log Analytics + Application Insights (the pack's telemetry, not Sentinel's)
//     plan-/func-.. Flex Consumption function app (Python 3.11), signing people in itself (Entra ID, MSAL)
//     con-...       Microsoft Sentinel API connection (managed identity)
//     logic-...     one Consumption Logic App per entry of `playbooks` below
//     ag-...        action group + alert rules, when ALERT_EMAIL is set
//   Entra ID: the app registration sign-in uses (Microsoft Graph Bicep extension, no client secret)
//   existing Sentinel workspace (optional): role assignments and automation rules
//
// Playbooks are deployed once the function host has keys: azure.yaml's `workflows.up` runs provision,
// deploy, provision, and the postdeploy hook sets DEPLOY_PLAYBOOKS between them (docs/deploy.md). Plain
// resource declarations only (no registry modules), so the templates build offline, checkov scans every
// resource and tools/bicep_check.py checks every property against the official types.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; used in resource names and the azd-env-name tag.')
param environmentName string

@minLength(1)
@description('Region of all resources. It must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group name; empty = rg-<environmentName>.')
param resourceGroupName string = ''

// --- Function configuration (app settings; names as in core/settings.py) ---

@description('ServiceNow instance URL, e.g. https://contoso.service-now.com; empty = ServiceNow sync reports it missing.')
param serviceNowInstanceUrl string = ''

@description('Caller (sys_user sys_id) of the tickets the ServiceNow sync creates; empty = none set.')
param serviceNowCallerId string = ''

@description('Assignment group (sys_user_group sys_id) of new ServiceNow tickets; empty = none set.')
param serviceNowAssignmentGroup string = ''

@description('Category of new ServiceNow tickets; empty = the instance default.')
param serviceNowCategory string = ''

@description('JSON overriding the ServiceNow sync mapping tables (docs/servicenow.md); empty = the documented defaults.')
param serviceNowMapping string = ''

@description('Tickets per ServiceNow request when the sync polls (page size).')
@minValue(1)
@maxValue(1000)
param serviceNowPollBatch int = 100

@description('Accounts response actions never touch (UPNs or object ids, comma-separated).')
param protectedAccounts string = ''

@description('Machines response actions never touch (names or device ids, comma-separated).')
param protectedMachines string = ''

@description('Who may decide approvals (UPNs / emails, comma-separated).')
param approvers string = ''

@description('Mailbox (UPN) approval requests are mailed from through Graph sendMail; empty = ask through Teams / Slack only.')
param approvalMailbox string = ''

@minValue(1)
@description('Minutes approvers have before an approval times out (the playbook then does nothing destructive).')
param approvalTimeoutMinutes int = 60

@description('Report what response actions would do without doing it. Safe by default: set false deliberately.')
param dryRun bool = true

@description('Defender for Endpoint isolation of response/mde/isolate: Full, or Selective (Outlook, Teams and Skype keep working).')
@allowed(['Full', 'Selective'])
param mdeIsolationType string = 'Full'

@description('Blast-radius cap: most machines, users or IPs one response call may act on (more is refused as a whole).')
@minValue(1)
@maxValue(50)
param responseMaxTargets int = 3

@description('Hours an IP block lasts (Defender indicator and the firewall block list); blocking again renews it.')
@minValue(1)
@maxValue(8760)
param blockIpExpiryHours int = 72

@description('Further Sentinel workspace resource ids the pack may act on (comma-separated), besides sentinelWorkspaceResourceId (multi-workspace or MSSP set-ups).')
param additionalSentinelWorkspaces string = ''

@description('Base URL of the links the pack builds; empty = https://<function app>.azurewebsites.net. Set it for a custom domain or a front door.')
param publicBaseUrl string = ''

@description('Decisions (approvals, the user\'s own answer) need an Entra ID sign-in. Turning it off is logged loudly and shown by health.')
param approvalRequireSignIn bool = true

@description('Create the Entra app registration people sign in with (needs the right to register applications); false = no sign-in set-up by the deployment.')
param enableSignIn bool = true

@description('app (default, what Flex Consumption needs): the app signs people in itself; easyauth: App Service Authentication in front (only on plans where Microsoft supports it). docs/deploy.md, "Sign-in".')
@allowed(['app', 'easyauth'])
param signInMode string = 'app'

@description('Conditional Access authentication context id (c1..c99) whose policy requires MFA with sign-in frequency every time; "Yes, it was me" asks for it. Empty = Yes cannot count (docs/deploy.md).')
param signInMfaAuthContext string = ''

@description('Client id of an existing app registration to sign in with instead of creating one (bring your own); empty = create it.')
param authClientId string = ''

@description('JSON object of further app settings (name -> value), for settings not yet wired to their own parameter; empty = none.')
param extraAppSettings string = ''

@description('E-mail address the alert rules notify (function 5xx rate, poisoned lookups, failed approval callbacks, stalled ServiceNow poll); empty = no alerts.')
param alertEmail string = ''

// --- Secrets: written to Key Vault when given, never to an app setting or an output ---

@secure()
param virusTotalApiKey string = ''
@secure()
param serviceNowUsername string = ''
@secure()
param serviceNowPassword string = ''
@secure()
param serviceNowWebhookSecret string = ''
@secure()
param slackWebhookUrl string = ''
@secure()
param teamsWebhookUrl string = ''
@secure()
param approvalSigningKey string = ''

@description('default, or recover: bring back the soft-deleted Key Vault of this environment (the preprovision hook sets it after azd down).')
@allowed(['default', 'recover'])
param keyVaultCreateMode string = 'default'

// --- Sentinel ---

@description('Resource id of the existing Sentinel (Log Analytics) workspace; empty = no workspace roles, no automation rules.')
param sentinelWorkspaceResourceId string = ''

@description('Object id of the "Azure Security Insights" service principal in this tenant (az ad sp show --id 98785600-1bb7-4fb9-b9fa-19afe2c8a360 --query id -o tsv); empty = grant it in Sentinel settings instead.')
param sentinelAutomationPrincipalId string = ''

@description('Deploy the Logic Apps. Set by the postdeploy hook once the function host serves keys.')
param deployPlaybooks bool = false

@description('Create automation rules in the Sentinel workspace that run each playbook on its runOn events.')
param createAutomationRules bool = false

// --- Capacity ---

@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@description('Zone-redundant Flex plan (region permitting); bills two always-ready instances per function group.')
param zoneRedundant bool = false

// The playbook registry. To add a playbook: put its workflow definition in infra/playbooks/ (written for the
// Microsoft Sentinel incident trigger) and add one entry here. `runOn` = the incident events ('Created', 'Updated')
// on which an automation rule runs it when createAutomationRules is true; [] = run manually or from your own
// automation rules. Optional: `parameters` = values of the definition's own parameters ({name: {value: ...}}),
// `updateConditions` = the conditions of its Updated automation rule (infra/automation/*.json), and the variants
// generated from the same definition (infra/app/playbook.bicep, docs/deploy.md "Run the playbooks from Sentinel"):
// `alert: true` = also deploy it with the alert trigger (`<name>-alert`: a manual run on an alert, or an automation
// rule "When alert is created" when `alertRunOn` is ['Created']); `entities` = also deploy it with the entity
// trigger, one playbook per entity type (`<name>-entity-<type>`: a manual run on an entity, from an incident or the
// entity page; automation rules cannot run these).
var playbooks = [
  {
    name: 'enrichment-ip-reputation'
    definition: loadJsonContent('playbooks/enrichment-ip-reputation.json')
    runOn: ['Created']
    alert: true
    // No alert rule: every incident is enriched on creation already. ['Created'] = also on every new alert.
    alertRunOn: []
    entities: ['IP']
  }
  {
    // One playbook for both events: the function creates the ticket once and syncs it on every run.
    // The Updated rule skips the pack's own comments (they would re-trigger it) but not a severity, status
    // or label change the pack makes: infra/automation/sync-servicenow-outbound-updated.json, docs/deploy.md.
    // Incident only: a ticket follows an incident, which the automation rules already cover.
    name: 'sync-servicenow-outbound'
    definition: loadJsonContent('playbooks/sync-servicenow-outbound.json')
    runOn: ['Created', 'Updated']
    updateConditions: loadJsonContent('automation/sync-servicenow-outbound-updated.json')
  }
  {
    // Isolates the incident's machines through Defender for Endpoint and polls the machine actions to the
    // end (asynchronous pattern). Destructive: no blanket rule; attach it to the analytics rules that warrant it.
    name: 'response-isolate-machines'
    definition: loadJsonContent('playbooks/response-isolate-machines.json')
    runOn: []
    alert: true
    entities: ['Host']
  }
  {
    // Blocks the incident's IPs (Defender indicator + the firewall block list), within BLOCK_IP_VERDICTS.
    name: 'response-block-ip'
    definition: loadJsonContent('playbooks/response-block-ip.json')
    runOn: []
    alert: true
    entities: ['IP']
  }
  {
    // Disables the incident's user accounts in Entra ID (protected accounts, blast radius and dry run apply).
    name: 'response-disable-user'
    definition: loadJsonContent('playbooks/response-disable-user.json')
    runOn: []
    alert: true
    entities: ['Account']
  }
  {
    // Ticket, Teams/Slack, approval wait, then Block (Entra + IP block) or Ignore (close). It asks people,
    // so no blanket rule: attach it with an automation rule scoped to the compromised-user analytics rules.
    // Incident only: Ignore closes the incident, which an alert or a single entity does not decide.
    name: 'orchestration-compromised-user'
    definition: loadJsonContent('playbooks/orchestration-compromised-user.json')
    runOn: []
    parameters: {
      approvalTimeout: {
        value: 'PT${approvalTimeoutMinutes}M'
      }
    }
  }
  {
    // Asks the incident's users "Was this you?" by mail (sign-in required); No: confirmed compromised, SOC told.
    name: 'response-ask-user'
    definition: loadJsonContent('playbooks/response-ask-user.json')
    runOn: []
    alert: true
    entities: ['Account']
  }
  {
    // Blocks the incident's files, URLs and domains as Defender indicators, within BLOCK_INDICATOR_VERDICTS (run the
    // enrichment first). Destructive: no blanket rule; attach it after enrichment-ip-reputation where it fits.
    name: 'response-block-indicators'
    definition: loadJsonContent('playbooks/response-block-indicators.json')
    runOn: []
  }
]

// What the registry deploys: each entry as written (incident trigger), its alert variant and its entity variants.
// Loops below index this list; only incident and alert variants can have automation rules (`triggersOn`).
var deployedPlaybooks = flatten(map(playbooks, playbook => concat([
  {
    name: playbook.name
    definition: playbook.definition
    trigger: 'incident'
    entityType: ''
    triggersOn: 'Incidents'
    runOn: playbook.runOn
    parameters: playbook.?parameters ?? {}
    updateConditions: playbook.?updateConditions ?? []
  }
], (playbook.?alert ?? false) ? [
  {
    name: '${playbook.name}-alert'
    definition: playbook.definition
    trigger: 'alert'
    entityType: ''
    triggersOn: 'Alerts'
    runOn: playbook.?alertRunOn ?? []
    parameters: playbook.?parameters ?? {}
    updateConditions: []
  }
] : [], map(playbook.?entities ?? [], entityType => {
  name: '${playbook.name}-entity-${toLower(entityType)}'
  definition: playbook.definition
  trigger: 'entity'
  entityType: entityType
  triggersOn: ''
  runOn: []
  parameters: playbook.?parameters ?? {}
  updateConditions: []
}))))

// Queues that queue triggers listen on (enrichment/functions.py: ip_reputation_deferred).
var stateQueueNames = ['vt-deferred']

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var functionAppName = '${abbrs.webSitesFunctions}${resourceToken}'
var functionHostName = '${functionAppName}.azurewebsites.net'
var resourceGroupNameResolved = !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'

var sentinelEnabled = !empty(sentinelWorkspaceResourceId)
// /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.OperationalInsights/workspaces/{name}
// Without a workspace the switched-off modules still need a scope that exists: the pack's own group
// (ARM has failed deployments whose skipped modules pointed at a group that does not exist).
var workspaceIdParts = split(sentinelEnabled ? sentinelWorkspaceResourceId : '/subscriptions/${subscription().subscriptionId}/resourceGroups/${resourceGroupNameResolved}/providers/Microsoft.OperationalInsights/workspaces/none', '/')
var sentinelSubscriptionId = workspaceIdParts[2]
var sentinelResourceGroupName = workspaceIdParts[4]
var sentinelWorkspaceName = workspaceIdParts[8]

resource rg 'Microsoft.Resources/resourceGroups@2024-11-01' = {
  name: resourceGroupNameResolved
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}func-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    queueNames: stateQueueNames
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
    createMode: keyVaultCreateMode
    // Secret names are the ones app/api.bicep references.
    secretValues: {
      'virustotal-api-key': virusTotalApiKey
      'servicenow-username': serviceNowUsername
      'servicenow-password': serviceNowPassword
      'servicenow-webhook-secret': serviceNowWebhookSecret
      'slack-webhook-url': slackWebhookUrl
      'teams-webhook-url': teamsWebhookUrl
      'approval-signing-key': approvalSigningKey
    }
  }
}

// Without a trailing slash: the sign-in redirect URI is <baseUrl>/api/auth/callback, exactly as the app builds it.
var trimmedBaseUrl = endsWith(publicBaseUrl, '/') ? substring(publicBaseUrl, 0, length(publicBaseUrl) - 1) : publicBaseUrl
var baseUrl = empty(publicBaseUrl) ? 'https://${functionHostName}' : trimmedBaseUrl

// The app registration people sign in with (Microsoft Graph Bicep extension).
module auth 'app/auth.bicep' = if (enableSignIn && empty(authClientId)) {
  name: 'auth'
  scope: rg
  params: {
    uniqueName: 'sentinel-playbooks-${resourceToken}'
    displayName: 'sentinel-playbooks sign-in (${environmentName})'
    baseUrl: baseUrl
    signInMode: signInMode
    identityPrincipalId: identity.outputs.principalId
  }
}

var signInClientId = !enableSignIn ? '' : (!empty(authClientId) ? authClientId : auth.outputs.clientId)

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    zoneRedundant: zoneRedundant
    serviceNowInstanceUrl: serviceNowInstanceUrl
    serviceNowCallerId: serviceNowCallerId
    serviceNowAssignmentGroup: serviceNowAssignmentGroup
    serviceNowCategory: serviceNowCategory
    serviceNowMapping: serviceNowMapping
    serviceNowPollBatch: serviceNowPollBatch
    protectedAccounts: protectedAccounts
    protectedMachines: protectedMachines
    approvers: approvers
    approvalMailbox: approvalMailbox
    approvalTimeoutMinutes: approvalTimeoutMinutes
    dryRun: dryRun
    mdeIsolationType: mdeIsolationType
    responseMaxTargets: responseMaxTargets
    blockIpExpiryHours: blockIpExpiryHours
    publicBaseUrl: baseUrl
    sentinelWorkspaces: join(filter([sentinelWorkspaceResourceId, additionalSentinelWorkspaces], id => !empty(id)), ',')
    approvalRequireSignIn: approvalRequireSignIn
    authClientId: signInClientId
    signInMode: signInMode
    signInMfaAuthContext: signInMfaAuthContext
    extraAppSettings: empty(extraAppSettings) ? {} : json(extraAppSettings)
  }
  // The app starts with its storage, Key Vault and telemetry roles in place (no failed first start).
  dependsOn: [
    rbacPack
  ]
}

module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    actionGroupName: 'ag-${resourceToken}'
    alertEmail: alertEmail
    serviceNowConfigured: !empty(serviceNowInstanceUrl)
  }
}

module sentinelConnection 'app/sentinel-connection.bicep' = if (deployPlaybooks) {
  name: 'sentinel-connection'
  scope: rg
  params: {
    name: '${abbrs.webConnections}azuresentinel-${resourceToken}'
    location: location
    tags: tags
  }
}

// Loops filter their array instead of `[for ...: if (...)]`, a form checkov's Bicep parser (pycep 0.7) cannot read.
module playbookApps 'app/playbook.bicep' = [for playbook in (deployPlaybooks ? deployedPlaybooks : []): {
  name: 'playbook-${playbook.name}'
  scope: rg
  params: {
    name: '${abbrs.logicWorkflows}${playbook.name}-${resourceToken}'
    location: location
    tags: tags
    definition: playbook.definition
    functionAppName: api.outputs.name
    sentinelConnectionId: deployPlaybooks ? sentinelConnection.outputs.id : ''
    sentinelConnectionName: deployPlaybooks ? sentinelConnection.outputs.name : ''
    sentinelApiId: deployPlaybooks ? sentinelConnection.outputs.apiId : ''
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
    definitionParameters: playbook.parameters
    trigger: playbook.trigger
    entityType: playbook.entityType
  }
}]

// Role assignments at the pack's resource group (storage, Key Vault, App Insights, Sentinel automation).
module rbacPack 'app/rbac.bicep' = {
  name: 'rbac-pack'
  scope: rg
  params: {
    functionPrincipalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    sentinelAutomationPrincipalId: sentinelAutomationPrincipalId
  }
}

// Role assignments on the Sentinel workspace (possibly another resource group or subscription).
module rbacSentinel 'app/rbac.bicep' = if (sentinelEnabled) {
  name: 'rbac-sentinel-${resourceToken}'
  scope: resourceGroup(sentinelSubscriptionId, sentinelResourceGroupName)
  params: {
    functionPrincipalId: identity.outputs.principalId
    sentinelWorkspaceName: sentinelWorkspaceName
    playbookPrincipalIds: [for (playbook, i) in (deployPlaybooks ? deployedPlaybooks : []): playbookApps[i].outputs.principalId]
  }
}

// A playbook whose runOn is [] gets no rule (the module loops over runOn); entity variants always have [].
module automationRules 'app/automation-rules.bicep' = [for (playbook, i) in (deployPlaybooks && createAutomationRules && sentinelEnabled ? deployedPlaybooks : []): {
  name: 'automation-${playbook.name}-${resourceToken}'
  scope: resourceGroup(sentinelSubscriptionId, sentinelResourceGroupName)
  params: {
    workspaceName: sentinelWorkspaceName
    playbookName: playbook.name
    logicAppResourceId: playbookApps[i].outputs.id
    triggersOn: playbook.triggersOn
    triggersWhen: playbook.runOn
    order: 100 + i
    updateConditions: playbook.updateConditions
  }
  // Sentinel refuses a RunPlaybook action it has no permission to run.
  dependsOn: [
    rbacPack
    rbacSentinel
  ]
}]

// Only what azd and the hooks need: names, URLs, ids. No key, secret or connection string.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = api.outputs.name
output AZURE_FUNCTION_URL string = api.outputs.url
output AZURE_FUNCTION_PRINCIPAL_ID string = identity.outputs.principalId
// For the postdeploy hook's sign-in check (docs/deploy.md, "Sign-in"); a client id is no secret.
output SIGN_IN_CLIENT_ID string = signInClientId
output SIGN_IN_MODE string = signInMode
output AZURE_KEYVAULT_NAME string = keyVault.outputs.name
output SENTINEL_WORKSPACE_NAME string = sentinelEnabled ? sentinelWorkspaceName : ''
output PLAYBOOKS_DEPLOYED bool = deployPlaybooks
output SIGN_IN_CLIENT_ID string = signInClientId
