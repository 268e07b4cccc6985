// The Entra ID app registration that App Service Authentication (Easy Auth) signs approvers and users in with.
// Created with the Microsoft Graph Bicep extension (infra/bicepconfig.json), so `azd provision` needs the right
// to register applications (Application Developer, or "users can register applications").
//
// No client secret: the function app's user-assigned identity is a federated identity credential of this app,
// and Easy Auth redeems sign-in codes with that identity's token (app setting
// OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID, infra/app/api.bicep). Why and how: docs/permissions.md.
extension microsoftGraphV1

@description('Stable key of the app registration (Graph uniqueName): re-deploying updates, never duplicates.')
param uniqueName string

param displayName string

@description('Host name of the function app (<name>.azurewebsites.net): the sign-in redirect goes to /.auth/login/aad/callback on it.')
param hostName string

@description('Principal (object) id of the function app\'s user-assigned identity: the federated credential\'s subject.')
param identityPrincipalId string

var graphAppId = '00000003-0000-0000-c000-000000000000' // Microsoft Graph
var userReadScope = 'e1fe6dd8-ba31-4d61-89e7-88639da4683d' // User.Read (delegated): sign in and read the user's profile

resource app 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  signInAudience: 'AzureADMyOrg'
  web: {
    redirectUris: [
      'https://${hostName}/.auth/login/aad/callback'
    ]
    implicitGrantSettings: {
      enableIdTokenIssuance: true
    }
  }
  requiredResourceAccess: [
    {
      resourceAppId: graphAppId
      resourceAccess: [
        {
          id: userReadScope
          type: 'Scope'
        }
      ]
    }
  ]
}

// The function's managed identity stands in for a client secret (workload identity federation).
resource functionIdentityCredential 'Microsoft.Graph/applications/federatedIdentityCredentials@v1.0' = {
  name: '${app.uniqueName}/function-app-identity'
  audiences: [
    'api://AzureADTokenExchange'
  ]
  issuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
  subject: identityPrincipalId
  description: 'The sentinel-playbooks function app identity redeems App Service Authentication sign-ins (no secret).'
}

resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: app.appId
}

output clientId string = app.appId
output servicePrincipalId string = servicePrincipal.id
