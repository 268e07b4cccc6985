// The Microsoft Sentinel (azuresentinel) API connection shared by the playbooks in this resource group.
// parameterValueType 'Alternative' makes it a managed-identity connection: at run time each Logic App
// authenticates as its own identity, so no user token or secret is stored in the connection.

param name string
param location string
param tags object = {}

resource connection 'Microsoft.Web/connections@2016-06-01' = {
  name: name
  location: location
  tags: tags
  // Expected warning (tools/bicep_check.py EXPECTED_WARNINGS): Microsoft's Sentinel playbook templates set it.
  #disable-next-line BCP037
  kind: 'V1'
  properties: {
    displayName: name
    api: {
      id: subscriptionResourceId('Microsoft.Web/locations/managedApis', location, 'azuresentinel')
    }
    // Expected warning (tools/bicep_check.py EXPECTED_WARNINGS): the managed-identity connection of Microsoft's templates.
    #disable-next-line BCP037
    parameterValueType: 'Alternative'
    customParameterValues: {}
  }
}

output id string = connection.id
output name string = connection.name
output apiId string = subscriptionResourceId('Microsoft.Web/locations/managedApis', location, 'azuresentinel')
