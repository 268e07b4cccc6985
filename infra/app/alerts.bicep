// Alerts on the pack's own health, e-mailed to an action group. Log-based (Application Insights), because the
// signals are the app's own: requests answered 5xx, and log lines the functions write when work is given up
// (deferred VirusTotal lookups that end in vt-deferred-poison), when an approval callback cannot be delivered,
// and the ServiceNow poll's summary line, whose absence means the poll is not advancing. Storage queue metrics
// are per account, not per queue, so they cannot tell the poison queue apart. The exact log lines are checked
// against the code by tests/infra/test_wiring.py, so renaming one breaks the build, not the alert.

param location string
param tags object = {}
param applicationInsightsName string
param actionGroupName string

@description('Where alerts are mailed; empty = no action group and no alert rules.')
param alertEmail string

@description('Alert when more than this percentage of requests in 15 minutes answered 5xx (at least 10 requests).')
@minValue(1)
@maxValue(100)
param serverErrorPercent int = 5

@description('Alert when the ServiceNow poll wrote no summary for this many minutes (only with ServiceNow configured).')
param pollStallMinutes int = 30

param serviceNowConfigured bool = false

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

var enabled = !empty(alertEmail)

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (enabled) {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'soc-pack'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// name -> (description, severity, query, operator, threshold, window). Each query counts rows; the rule fires
// on the operator and threshold over the window.
var rules = [
  {
    name: 'function-5xx-rate'
    description: 'More than ${serverErrorPercent}% of function requests answered 5xx in 15 minutes.'
    severity: 1
    query: 'requests | summarize total = count(), failed = countif(toint(resultCode) >= 500) | where total >= 10 and failed * 100.0 / total > ${serverErrorPercent}'
    operator: 'GreaterThan'
    threshold: 0
    window: 'PT15M'
    enabled: true
  }
  {
    name: 'vt-deferred-poison'
    description: 'Deferred VirusTotal lookups were given up (their message goes to vt-deferred-poison): the comment shows them as failed.'
    severity: 2
    query: 'traces | where message has "giving up VirusTotal lookups" or message has "vt-deferred-poison"'
    operator: 'GreaterThan'
    threshold: 0
    window: 'PT15M'
    enabled: true
  }
  {
    name: 'approval-callback-failed'
    description: 'An approval decision could not be delivered to its Logic App run (callback failed or the run no longer waits).'
    severity: 1
    query: 'traces | where message has "follow-up failed" or message has "the Logic App run no longer waits" or message has "callback marked failed"'
    operator: 'GreaterThan'
    threshold: 0
    window: 'PT15M'
    enabled: true
  }
  {
    name: 'servicenow-poll-stalled'
    description: 'The ServiceNow poll has not completed a cycle for ${pollStallMinutes} minutes: ticket changes are not reaching Sentinel.'
    severity: 2
    query: 'traces | where message startswith "servicenow_poll: {"'
    operator: 'LessThan'
    threshold: 1
    window: 'PT${pollStallMinutes}M'
    enabled: serviceNowConfigured
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in filter(rules, candidate => enabled && candidate.enabled): {
  name: '${actionGroupName}-${rule.name}'
  location: location
  tags: tags
  properties: {
    displayName: 'sentinel-playbooks: ${rule.name}'
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: rule.window
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Count'
          operator: rule.operator
          threshold: rule.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

output actionGroupId string = enabled ? actionGroup.id : ''
