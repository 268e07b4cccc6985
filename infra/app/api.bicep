// The function app on Flex Consumption (Linux, Python 3.11) running as the user-assigned identity.
// No secret is in an app setting: storage and App Insights use the identity, secrets are Key Vault
// references resolved by the platform with the same identity.

param name string
param planName string
param location string
param tags object = {}

param identityId string
param identityClientId string

param storageAccountName string
param deploymentContainerName string
param applicationInsightsName string
param keyVaultName string

@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@description('Spread instances over availability zones (where the region supports it); keeps at least two always-ready instances per function group, billed.')
param zoneRedundant bool = false

// Plain settings from main.bicep (names exactly as in core/settings.py).
param serviceNowInstanceUrl string = ''
param serviceNowCallerId string = ''
param serviceNowAssignmentGroup string = ''
param serviceNowCategory string = ''
param serviceNowMapping string = ''
param serviceNowPollBatch int = 100
param protectedAccounts string = ''
param protectedMachines string = ''
param approvers string = ''
param approvalMailbox string = ''
param approvalTimeoutMinutes int = 60
param dryRun bool = true
@allowed(['Full', 'Selective'])
param mdeIsolationType string = 'Full'
param responseMaxTargets int = 3
param blockIpExpiryHours int = 72

@description('Base URL of every link the pack builds (approval pages, polling URLs): https://<app>.azurewebsites.net or a custom domain.')
param publicBaseUrl string

@description('Resource ids of the Sentinel workspaces the pack may act on (comma-separated); empty = pinning off.')
param sentinelWorkspaces string = ''

@description('Decisions need an Entra ID sign-in (App Service Authentication in front of the approval pages).')
param approvalRequireSignIn bool = true

@description('Client id of the Entra app registration people sign in with; empty = no sign-in set up.')
param authClientId string = ''

@description('app: the app signs people in itself (what Flex Consumption needs: no authsettingsV2, so the platform never sets a principal header the app might be asked to trust); easyauth: App Service Authentication in front (plans where it is supported).')
@allowed(['app', 'easyauth'])
param signInMode string = 'app'

@description('Conditional Access authentication context (c1..c99) whose policy requires MFA every time; "Yes, it was me" asks for it. Empty: Yes cannot count in app mode.')
param signInMfaAuthContext string = ''

@description('Further app settings (name -> value) for settings added to core/settings.py before they get their own parameter.')
param extraAppSettings object = {}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// Versionless references: a rotated secret is picked up without touching the app settings.
var secretsUri = '${vault.properties.vaultUri}secrets/'

var appSettings = {
  // AzureWebJobsStorage with the user-assigned identity (no connection string).
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table

  // Telemetry authenticated with the identity (App Insights has local auth disabled). With host.json's
  // telemetryMode OpenTelemetry the Python worker joins the host's traces (Use OpenTelemetry with Azure Functions).
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'

  // azure-identity picks the user-assigned identity by its client id (core/credentials.py).
  AZURE_CLIENT_ID: identityClientId

  // State store with the identity: core/state.py uses these when STATE_STORAGE_CONNECTION is unset.
  STATE_TABLE_SERVICE_URI: storage.properties.primaryEndpoints.table
  STATE_QUEUE_SERVICE_URI: storage.properties.primaryEndpoints.queue
  // The queue trigger (connection="STATE_STORAGE_CONNECTION") as an identity-based connection.
  // STATE_STORAGE_CONNECTION itself stays unset in Azure: it would be read as a connection string.
  STATE_STORAGE_CONNECTION__queueServiceUri: storage.properties.primaryEndpoints.queue
  STATE_STORAGE_CONNECTION__credential: 'managedidentity'
  STATE_STORAGE_CONNECTION__clientId: identityClientId

  // Secrets: Key Vault references (secret names match keyvault.bicep's secretValues in main.bicep).
  VIRUSTOTAL_API_KEY: '@Microsoft.KeyVault(SecretUri=${secretsUri}virustotal-api-key)'
  SERVICENOW_USERNAME: '@Microsoft.KeyVault(SecretUri=${secretsUri}servicenow-username)'
  SERVICENOW_PASSWORD: '@Microsoft.KeyVault(SecretUri=${secretsUri}servicenow-password)'
  SERVICENOW_WEBHOOK_SECRET: '@Microsoft.KeyVault(SecretUri=${secretsUri}servicenow-webhook-secret)'
  SLACK_WEBHOOK_URL: '@Microsoft.KeyVault(SecretUri=${secretsUri}slack-webhook-url)'
  TEAMS_WEBHOOK_URL: '@Microsoft.KeyVault(SecretUri=${secretsUri}teams-webhook-url)'
  APPROVAL_SIGNING_KEY: '@Microsoft.KeyVault(SecretUri=${secretsUri}approval-signing-key)'

  // Plain configuration from azd environment values.
  SERVICENOW_INSTANCE_URL: serviceNowInstanceUrl
  SERVICENOW_CALLER_ID: serviceNowCallerId
  SERVICENOW_ASSIGNMENT_GROUP: serviceNowAssignmentGroup
  SERVICENOW_CATEGORY: serviceNowCategory
  SERVICENOW_MAPPING: serviceNowMapping
  SERVICENOW_POLL_BATCH: string(serviceNowPollBatch)
  PROTECTED_ACCOUNTS: protectedAccounts
  PROTECTED_MACHINES: protectedMachines
  APPROVERS: approvers
  APPROVAL_MAILBOX: approvalMailbox
  APPROVAL_TIMEOUT_MINUTES: string(approvalTimeoutMinutes)
  // Approval callbacks go only to Logic Apps hosts (SSRF guard); loopback callbacks are never allowed here.
  APPROVAL_CALLBACK_ALLOWED_HOSTS: '*.logic.azure.com'
  LOCAL_MODE: 'false'
  DRY_RUN: dryRun ? 'true' : 'false'
  MDE_ISOLATION_TYPE: mdeIsolationType
  RESPONSE_MAX_TARGETS: string(responseMaxTargets)
  BLOCK_IP_EXPIRY_HOURS: string(blockIpExpiryHours)
  // Links never trust the request's Host header (issue 14.4); actions are pinned to the workspaces (14.5).
  PUBLIC_BASE_URL: publicBaseUrl
  SENTINEL_WORKSPACES: sentinelWorkspaces
  APPROVAL_REQUIRE_SIGN_IN: approvalRequireSignIn ? 'true' : 'false'
  // Who signs people in (core/principal.py, core/signin.py). The authority's discovery document gives the token
  // endpoint and the signing keys; no secret: MSAL's client assertion is this app's identity token (AZURE_CLIENT_ID).
  SIGN_IN_MODE: signInMode
  SIGN_IN_CLIENT_ID: authClientId
  SIGN_IN_AUTHORITY: '${environment().authentication.loginEndpoint}${tenant().tenantId}'
  SIGN_IN_MFA_AUTH_CONTEXT: signInMfaAuthContext
}

var easyAuth = !empty(authClientId) && signInMode == 'easyauth'

// App Service Authentication redeems sign-in codes with the function identity's token instead of a client
// secret: this setting names the identity (the app registration trusts it as a federated credential).
var authSettings = !easyAuth ? {} : {
  OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID: identityClientId
  WEBSITE_AUTH_AAD_ALLOWED_TENANTS: tenant().tenantId
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    // checkov:skip=CKV_AZURE_225:Zone redundancy is the zoneRedundant parameter (off by default): on Flex it bills two always-ready instances per function group, and Logic App retries absorb an instance loss.
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    // checkov:skip=CKV_AZURE_17:Client certificates are not used: Logic Apps authenticate with a function key over TLS.
    // checkov:skip=CKV_AZURE_212:Flex Consumption scales from zero and places instances itself; there is no minimum instance count to set (always-ready instances are a cost choice).
    // checkov:skip=CKV_AZURE_213:The App Service health check feature is not available on Flex Consumption; GET /api/health is probed by the postdeploy hook and can back an availability test.
    // checkov:skip=CKV_AZURE_222:No VNet in this template: Sentinel's Logic Apps call the functions over the public endpoint (function keys + TLS 1.2).
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: identityId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
  }

  resource settings 'config' = {
    name: 'appsettings'
    properties: union(appSettings, authSettings, extraAppSettings)
  }

  // App Service Authentication (Easy Auth v2), only with signInMode 'easyauth' (plans where it is supported; on
  // Flex Consumption the app signs people in itself, and no authsettingsV2 exists, so the platform never sets
  // WEBSITE_AUTH_ENABLED or a principal header). Unauthenticated requests pass through (Logic Apps call with
  // function keys; health is anonymous); the pages read X-MS-CLIENT-PRINCIPAL and send everyone else to
  // /.auth/login/aad. No token store: the pack never calls an API as the user. docs/deploy.md, "Sign-in".
  resource authentication 'config' = if (easyAuth) {
    name: 'authsettingsV2'
    properties: {
      platform: {
        enabled: true
      }
      globalValidation: {
        requireAuthentication: false
        unauthenticatedClientAction: 'AllowAnonymous'
      }
      httpSettings: {
        requireHttps: true
      }
      login: {
        tokenStore: {
          enabled: false
        }
      }
      identityProviders: {
        azureActiveDirectory: {
          enabled: true
          registration: {
            clientId: authClientId
            clientSecretSettingName: 'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID'
            // v1 issuer: its ID tokens carry amr, which the fresh multi-factor answer reads in this mode.
            openIdIssuer: 'https://sts.windows.net/${tenant().tenantId}/'
          }
          validation: {
            allowedAudiences: [
              'api://${authClientId}'
              authClientId
            ]
          }
        }
      }
    }
  }

  // azd deploys with an Entra token; basic (publishing-profile) credentials stay off.
  resource ftpCredentials 'basicPublishingCredentialsPolicies' = {
    name: 'ftp'
    properties: {
      allow: false
    }
  }

  resource scmCredentials 'basicPublishingCredentialsPolicies' = {
    name: 'scm'
    properties: {
      allow: false
    }
  }
}

output name string = functionApp.name
output url string = 'https://${functionApp.properties.defaultHostName}'
