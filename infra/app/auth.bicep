// The Entra ID app registration approvers and users sign in with: the app's own sign-in (signInMode 'app', what
// Flex Consumption needs: core/signin.py) or App Service Authentication (signInMode 'easyauth', other plans).
// Created with the Microsoft Graph Bicep extension (infra/bicepconfig.json), so `azd provision` needs the right
// to register applications (Application Developer, or "users can register applications").
//
// No client secret: the function app's user-assigned identity is a federated identity credential of this app.
// The app's sign-in (MSAL) redeems codes with that identity's token for api://AzureADTokenExchange as client
// assertion; Easy Auth does the same through the app setting OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID
// (infra/app/api.bicep). Why and how: docs/permissions.md, docs/deploy.md ("Sign-in").
extension microsoftGraphV1

@description('Stable key of the app registration (Graph uniqueName): re-deploying updates, never duplicates.')
param uniqueName string

param displayName string

@description('Base URL people reach the app at (https://<name>.azurewebsites.net or PUBLIC_BASE_URL): the sign-in redirect URI is on it.')
param baseUrl string

@description('app: the app signs people in (redirect URI /api/auth/callback, authorization code flow only); easyauth: App Service Authentication (/.auth/login/aad/callback, ID tokens from the authorize endpoint).')
@allowed(['app', 'easyauth'])
param signInMode string = 'app'

@description('Principal (object) id of the function app\'s user-assigned identity: the federated credential\'s subject.')
param identityPrincipalId string

var graphAppId = '00000003-0000-0000-c000-000000000000' // Microsoft Graph
var userReadScope = 'e1fe6dd8-ba31-4d61-89e7-88639da4683d' // User.Read (delegated): sign in and read the user's profile

var appSignIn = signInMode == 'app'

resource app 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  signInAudience: 'AzureADMyOrg'
  web: {
    redirectUris: [
      appSignIn ? '${baseUrl}/api/auth/callback' : '${baseUrl}/.auth/login/aad/callback'
    ]
    implicitGrantSettings: {
      // Easy Auth's hybrid flow takes the ID token from the authorize endpoint; the app's own sign-in redeems a code.
      enableIdTokenIssuance: !appSignIn
    }
  }
  // v2.0 ID tokens carry these only when asked for: when the person authenticated (the fresh multi-factor answer
  // needs it), the UPN (APPROVERS entries) and the mail (guests). learn.microsoft.com/entra/identity-platform/
  // optional-claims-reference.
  optionalClaims: {
    idToken: [
      {
        name: 'auth_time'
        essential: false
      }
      {
        name: 'upn'
        essential: false
      }
      {
        name: 'email'
        essential: false
      }
    ]
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
  description: 'The sentinel-playbooks function app identity redeems its sign-ins (no secret).'
}

resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: app.appId
}

output clientId string = app.appId
output servicePrincipalId string = servicePrincipal.id
