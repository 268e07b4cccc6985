"""The shipped business rule (docs/servicenow-business-rule.js), run under Node with stand-ins for the
Glide APIs it calls, sends a push the inbound function accepts: same body fields, same signature scheme."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from localdev.stack import SNOW_WEBHOOK_SECRET
from tests.sync.conftest import linked_ticket

RULE = Path(__file__).resolve().parents[2] / "docs" / "servicenow-business-rule.js"
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")]

# Glide stand-ins: generateMac(base64Key, 'HmacSHA256', data) returns the base64 HMAC, as documented.
HARNESS = r"""
const crypto = require('crypto');
const fs = require('fs');
const input = JSON.parse(process.argv[process.argv.length - 1]);
const sent = {headers: {}};
global.gs = {
  getProperty: (name) => input.properties[name],
  getUserName: () => 'megan.bowen',
  error: (m) => { sent.error = m; }, warn: (m) => { sent.warn = m; },
};
global.GlideStringUtil = {base64Encode: (s) => Buffer.from(s, 'utf8').toString('base64')};
global.GlideCertificateEncryption = function () {
  this.generateMac = (key, algorithm, data) => {
    if (algorithm !== 'HmacSHA256') throw new Error('unexpected algorithm ' + algorithm);
    return crypto.createHmac('sha256', Buffer.from(key, 'base64')).update(data, 'utf8').digest('base64');
  };
};
global.sn_ws = {RESTMessageV2: function () {
  this.setEndpoint = (u) => { sent.endpoint = u; };
  this.setHttpMethod = (m) => { sent.method = m; };
  this.setRequestHeader = (k, v) => { sent.headers[k] = v; };
  this.setRequestBody = (b) => { sent.body = b; };
  this.setHttpTimeout = () => {};
  this.execute = () => ({getStatusCode: () => 200, getBody: () => ''});
}};
const record = input.record;
global.current = {getUniqueValue: () => record.sys_id, getValue: (f) => record[f]};
global.previous = null;
eval(fs.readFileSync(input.rule, 'utf8'));
process.stdout.write(JSON.stringify(sent));
"""


def run_rule(record: dict, properties: dict) -> dict:
    done = subprocess.run(["node", "-e", HARNESS, json.dumps({"rule": str(RULE), "record": record,
                                                                "properties": properties})],
                          capture_output=True, text=True, timeout=30, check=True)
    return json.loads(done.stdout)


def test_the_business_rule_push_is_accepted_and_synced(snow, sync_host):
    stack = sync_host.stack
    incident_id, ticket = linked_ticket(sync_host)
    snow.update_as(ticket["sys_id"], "megan.bowen", urgency="3", work_notes="pushed by the rule")
    sent = run_rule(snow.record(ticket["sys_id"]), {
        "sentinel_sync.endpoint": f"{sync_host.host.url}/api/sync/servicenow/inbound",
        "sentinel_sync.function_key": sync_host.host.function_key,
        "sentinel_sync.webhook_secret": SNOW_WEBHOOK_SECRET})
    assert sent["method"] == "post" and "error" not in sent
    assert json.loads(sent["body"])["sys_mod_count"] == snow.record(ticket["sys_id"])["sys_mod_count"]
    response = sync_host.http.post(sent["endpoint"], data=sent["body"].encode(), headers=sent["headers"], timeout=60)
    assert response.status_code == 200, response.text
    assert stack.arm.incident(incident_id)["properties"]["severity"] == "Medium"


def test_the_business_rule_reports_missing_properties():
    sent = run_rule({"sys_id": "a" * 32, "number": "INC0010001"}, {})
    assert "sentinel_sync.endpoint" in sent["error"] and "endpoint" not in {k for k in sent if k != "error"}
