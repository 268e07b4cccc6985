// The function app's user-assigned identity. It exists before the app so that every role it needs
// (storage, Key Vault, Sentinel) can be granted in the same deployment, and it survives a re-created app.

param name string
param location string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
