/*
 * ServiceNow business rule: push ticket changes to the sentinel-playbooks sync (see docs/servicenow.md).
 *
 *   Name:      Sentinel sync: push ticket changes
 *   Table:     Incident [incident]
 *   When:      async        Insert: false   Update: true   Advanced: true
 *   Condition: current.correlation_display == 'Microsoft Sentinel' &&
 *              gs.getUserName() != gs.getProperty('sentinel_sync.integration_user')
 *
 * The condition skips the pack's own updates (made as the integration user); the function also
 * ignores them by their update count, so a push of the pack's own change writes nothing either way.
 * "async" keeps the analyst's form fast; a failed push is only logged: the function's poller picks
 * the change up within minutes, so nothing is lost.
 *
 * System properties (sys_properties; make them Private, readable by admin only):
 *   sentinel_sync.endpoint          https://<function app>.azurewebsites.net/api/sync/servicenow/inbound
 *   sentinel_sync.function_key      the function key (azd env get-value / portal: App keys)
 *   sentinel_sync.webhook_secret    the same value as the app setting SERVICENOW_WEBHOOK_SECRET
 *   sentinel_sync.integration_user  the integration user's user name, e.g. svc_sentinel_sync
 *
 * The body is signed with HMAC-SHA256 under the shared secret; the base64 digest goes in
 * X-ServiceNow-Signature. GlideCertificateEncryption.generateMac takes the key base64-encoded.
 */
(function executeRule(current, previous /* null in an async rule */) {
    var endpoint = gs.getProperty('sentinel_sync.endpoint');
    var functionKey = gs.getProperty('sentinel_sync.function_key');
    var secret = gs.getProperty('sentinel_sync.webhook_secret');
    if (!endpoint || !functionKey || !secret) {
        gs.error('Sentinel sync: set the sentinel_sync.endpoint, .function_key and .webhook_secret properties');
        return;
    }

    // Only what identifies the change: the function reads the ticket itself before acting on it.
    var body = JSON.stringify({
        sys_id: current.getUniqueValue(),
        number: current.getValue('number'),
        sys_mod_count: current.getValue('sys_mod_count'),
        sys_updated_on: current.getValue('sys_updated_on')
    });
    var signature = new GlideCertificateEncryption().generateMac(
        GlideStringUtil.base64Encode(secret), 'HmacSHA256', body);

    var request = new sn_ws.RESTMessageV2();
    request.setEndpoint(endpoint);
    request.setHttpMethod('post');
    request.setRequestHeader('Content-Type', 'application/json');
    request.setRequestHeader('x-functions-key', functionKey);
    request.setRequestHeader('X-ServiceNow-Signature', signature);
    request.setRequestBody(body);
    request.setHttpTimeout(15000);
    try {
        var response = request.execute();
        var status = response.getStatusCode();
        if (status < 200 || status >= 300) {
            // 4xx: a configuration problem (key, secret); 429/5xx: the function asks to come back later.
            gs.warn('Sentinel sync: push of ' + current.getValue('number') + ' answered HTTP ' + status +
                    ' ' + response.getBody() + '; the poller will pick the change up');
        }
    } catch (ex) {
        gs.warn('Sentinel sync: push of ' + current.getValue('number') + ' failed (' + ex +
                '); the poller will pick the change up');
    }
})(current, previous);
