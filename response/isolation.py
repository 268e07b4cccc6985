"""Isolate and release the incident's machines through Defender for Endpoint, and follow the actions.

Resolution of a Host entity to one Defender machine, strictest first:
1. ``MdatpDeviceId`` (Sentinel's ``additionalData``): ``GET /api/machines/{id}``; an unknown id is refused,
   and so is a machine whose DNS name contradicts the entity's host name;
2. else the FQDN (``hostName`` + ``dnsDomain``): exact ``computerDnsName eq '<fqdn>'``;
3. else a bare host name: exact ``computerDnsName eq '<name>'``, then machines named ``<name>.<domain>``
   (prefix query, verified label by label).
Never a substring match. No machine: refused as unknown; several: refused as ambiguous, with their ids.

Machines are resolved side by side and leased (response/run.py), their state read inside the lease, the
incident's blast-radius budget spent on them, then they are acted on side by side. Entities carrying their
``MdatpDeviceId`` are leased while they are resolved (``_prepare``: the lease keys are known up front).

Idempotency: before acting, the machine's Isolate actions are read (and its Unisolate actions, only when an
Isolate that took or may take effect exists: a machine never isolated costs one read). An isolation pending
or succeeded (and not released since) is not requested again; Defender's own "Action is already in
progress" (400 ActiveRequestAlreadyExists) is treated as pending. Release mirrors it.

Asynchronous pattern: pending actions are grouped in an *operation* (table ``responsestate``, partition
``response``, RowKey ``op|<hash of the action ids>``, so a retry that finds the same pending actions names the
same operation; written in the request that gives the leases back). The call answers 202 with ``Location`` =
``{PUBLIC_BASE_URL}/api/response/mde/actions/{operation}?expires=...&sig=...`` (core/links.py: no key in the
URL, never the request's Host) and ``Retry-After``; that route is anonymous, checks the signature, answers 202
while any action is Pending / InProgress and 200 with the final state, and writes one follow-up audit comment
with the outcome.

Analyst task (issue #18, item 3): once a machine is isolated (its Isolate action Succeeded, seen by the status
route, or found already isolated by a later call) the incident gets the ``isolation`` task of core/tasks.py,
"Collect an investigation package", naming the machines; ``INCIDENT_TASKS`` changes or turns it off. Its id is
deterministic (incident, outcome), so retries and later calls find the same task, and a task an analyst
completed is never reopened. The answer lists it under ``tasks``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from core.audit import AuditEntry, AuditTrail
from core.case import Case, HostEntity
from core.concurrency import run_all, run_bounded
from core.context import Context
from core.errors import BadRequest, ConfigurationError, DownstreamError, NotFound, PackError
from core.state import op_merge
from core.tasks import Tasks, templates_from_setting
from response.mde import (
    ACTIVE,
    FAILED,
    ISOLATION_TYPES,
    ActionInProgress,
    DefenderClient,
    DefenderRejected,
    Machine,
    MachineAction,
    machine_id_valid,
)
from response.run import GUID, STATE_PARTITION, STATE_TABLE, ResponseRun

log = logging.getLogger(__name__)

OP_PREFIX = "op|"
POLL_SECONDS = 30  # Retry-After of the 202s: isolation takes minutes; Defender allows 100 calls a minute
_OP = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Verb:
    """What isolate and release differ in: data, not branches."""

    name: str           # isolate | release
    action_type: str    # Defender machine action type
    undo_type: str
    title: str
    done_state: str     # wording when the machine is already in the wanted state


ISOLATE = Verb("isolate", "Isolate", "Unisolate", "Defender for Endpoint: isolate machines", "already isolated")
RELEASE = Verb("release", "Unisolate", "Isolate", "Defender for Endpoint: release machines from isolation",
               "not isolated")


def isolation_state(actions: list[MachineAction]) -> MachineAction | None:
    """The newest Isolate/Unisolate action that took or may take effect (failed ones changed nothing)."""
    return next((a for a in actions if a.status not in FAILED), None)


class MachineResponse:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.mde = DefenderClient(ctx.session, ctx.tokens, str(ctx.settings["MDE_ENDPOINT"]))

    # -- entry points -------------------------------------------------------------------------
    def isolate(self, case: Case, *, isolation_type: str | None = None, dry_run: bool = False) -> tuple[int, dict]:
        kind = isolation_type or str(self.ctx.settings["MDE_ISOLATION_TYPE"])
        match = next((t for t in ISOLATION_TYPES if t.lower() == kind.strip().lower()), None)
        if match is None:
            problem = f"isolation type {kind[:30]!r} is not one of {', '.join(ISOLATION_TYPES)}"
            if isolation_type:
                raise BadRequest(problem)
            raise ConfigurationError(f"setting MDE_ISOLATION_TYPE: {problem}")
        return self._run(case, ISOLATE, match, dry_run)

    def release(self, case: Case, *, dry_run: bool = False) -> tuple[int, dict]:
        return self._run(case, RELEASE, None, dry_run)

    # -- one call -----------------------------------------------------------------------------
    def _run(self, case: Case, verb: Verb, isolation_type: str | None, dry_run: bool) -> tuple[int, dict]:
        run = ResponseRun(self.ctx, case, action=f"mde-{verb.name}", title=verb.title, dry_run_requested=dry_run)
        hosts = run.case.hosts
        run.subjects = [(h.mde_device_id or h.fqdn) for h in hosts]
        run.skip("host")
        run.require("Host", hosts)
        pending: list[MachineAction] = []
        operation: str | None = None
        error: PackError | None = None
        try:
            machines, states = self._prepare(run, hosts)
            comment = self._comment(run.case, verb)
            acted = run.each(machines, lambda machine: self._act(run, verb, machine, states[machine.id.lower()],
                                                                 comment, isolation_type))
            pending = [action for action in acted if action is not None]
            if pending and not run.dry_run:  # a dry run never starts anything to follow
                operation = self._operation(run, verb, pending)
            tasks = self._tasks(run.case.incident_id, [e.data.get("computerDnsName") for e in run.entries
                                                       if e.outcome == "already"]) \
                if verb is ISOLATE and not run.read_only else []
        except PackError as exc:
            error, operation, tasks = exc, None, []
        summary = run.close(error, isolationType=isolation_type, operation=operation,
                            pendingActions=[a.to_dict() for a in pending], **({"tasks": tasks} if tasks else {}))
        return (202 if operation else 200), summary

    def _prepare(self, run: ResponseRun, hosts: tuple[HostEntity, ...]
                 ) -> tuple[list[Machine], dict[str, MachineAction | None]]:
        """The machines to act on, leased and counted, and each one's isolation state read inside its lease.

        When every entity names its machine by ``MdatpDeviceId`` the lease keys are known before Defender is asked,
        so two chains run side by side: the leases, then the machines' actions read inside them; the machines
        (resolution and guardrails), then the blast-radius budget spent on those that passed. Each chain is one
        storage and one Defender round trip, so the writes can start after one round trip of each instead of
        three in a row. The budget still counts only machines Defender knows and the guardrails let through.
        Otherwise (a machine named by its DNS name) the lease key is known only after resolution: resolve, then
        lease and spend the budget in one transaction, then read.
        """
        ids = list(dict.fromkeys(h.mde_device_id.lower() for h in hosts if h.mde_device_id))
        if len(ids) == len(hosts) and all(map(machine_id_valid, ids)) and len(ids) <= run.guard.max_targets:
            leased = threading.Event()

            def lease_then_read() -> dict[str, MachineAction | None]:
                try:
                    run.take("machine", ids, what="machines", counted=[])  # the budget: below, once resolved
                finally:
                    leased.set()
                return dict(zip(ids, run.each(ids, self._isolation), strict=True))

            def resolve_then_count() -> list[Machine]:
                machines = [m for m in self._resolve(run, hosts) if self._leased(run, m, ids)]
                leased.wait()  # an observer (the lease is another run's) only checks the budget
                run.count([m.id for m in machines], "machines")
                return machines

            states, machines = run_all(lease_then_read, resolve_then_count)
            return machines, states
        machines = self._resolve(run, hosts)
        run.take("machine", [m.id for m in machines], what="machines")
        states = run.each(machines, lambda machine: self._isolation(machine.id))
        return machines, {m.id.lower(): state for m, state in zip(machines, states, strict=True)}

    @staticmethod
    def _leased(run: ResponseRun, machine: Machine, ids: list[str]) -> bool:
        """Defender answered for the device id asked (a machine under another id would not be leased)."""
        if machine.id.lower() in ids:
            return True
        run.refuse(machine.label, f"Defender for Endpoint answered machine {machine.id} for another device id")
        return False

    def _resolve(self, run: ResponseRun, hosts: tuple[HostEntity, ...]) -> list[Machine]:
        """The machines the entities name, looked up side by side; refusals audited in the entities' order."""
        found = run.each(hosts, lambda host: self._resolve_one(run, host))
        machines: dict[str, Machine] = {}
        for machine in found:
            if machine is not None:
                machines.setdefault(machine.id, machine)
        return list(machines.values())

    def _resolve_one(self, run: ResponseRun, host: HostEntity) -> Machine | None:
        label = host.fqdn + (f" ({host.mde_device_id[:12]}…)" if host.mde_device_id else "")
        rule = run.guard.machine_rule(host.host_name, host.fqdn, host.mde_device_id)
        if rule:
            run.refuse(label, f"protected machine (PROTECTED_MACHINES entry {rule!r})")
            return None
        try:
            machine, why = self._find(host)
        except BadRequest as exc:  # a name or id that cannot be put in a query safely
            run.refuse(label, exc.message)
            return None
        if machine is None:
            run.refuse(label, why)
            return None
        rule = run.guard.machine_rule(machine.computer_dns_name, machine.id, tags=machine.machine_tags)
        if rule:
            run.refuse(machine.label, f"protected machine (PROTECTED_MACHINES entry {rule!r})")
            return None
        return machine

    def _find(self, host: HostEntity) -> tuple[Machine | None, str]:
        """The one machine the entity names, or None and why not."""
        if host.mde_device_id:
            machine = self.mde.get_machine(host.mde_device_id)
            if machine is None:
                return None, f"MdatpDeviceId {host.mde_device_id} is not known to Defender for Endpoint"
            entity_label = host.host_name.split(".", 1)[0].lower()
            machine_label = machine.computer_dns_name.split(".", 1)[0]
            if machine_label and entity_label != machine_label:
                return None, (f"MdatpDeviceId {host.mde_device_id} is machine {machine.computer_dns_name!r}, not "
                              f"{host.host_name!r}: refusing a contradictory entity")
            return machine, ""
        if "." in host.fqdn:
            found = self.mde.machines_named(host.fqdn)
        else:
            found = self.mde.machines_named(host.fqdn) or self.mde.machines_with_host_label(host.fqdn)
        if not found:
            return None, f"no Defender for Endpoint machine is named {host.fqdn!r} (exact match)"
        if len(found) > 1:
            listed = ", ".join(f"{m.computer_dns_name} {m.id}" for m in found[:5])
            return None, (f"ambiguous: {len(found)} Defender machines match {host.fqdn!r} ({listed}); "
                          "act on the machine by its device id")
        return found[0], ""

    def _act(self, run: ResponseRun, verb: Verb, machine: Machine, current: MachineAction | None, comment: str,
             isolation_type: str | None) -> MachineAction | None:
        """Bring one machine from ``current`` (its isolation state, read inside its lease) to the wanted state; the
        pending action to follow, if any."""
        data = {"machineId": machine.id, "computerDnsName": machine.computer_dns_name}
        if current is not None and current.type == verb.action_type:
            if current.active:
                run.add(machine.label, "pending", f"{verb.action_type} already requested ({current.status})",
                        [current.id], **data)
                return current
            scope = f", {current.scope}" if current.scope else ""
            run.add(machine.label, "already", f"{verb.done_state} ({current.type}{scope} {current.status} "
                                              f"{current.updated or current.created})", [current.id], **data)
            return None
        if current is None and verb is RELEASE:
            run.add(machine.label, "already", verb.done_state, **data)
            return None
        if run.read_only:
            run.add(machine.label, "would", f"{verb.action_type}" + (f" ({isolation_type})" if isolation_type
                                                                      else ""), **data)
            return None
        try:
            if verb is ISOLATE:
                assert isolation_type is not None
                action = self.mde.isolate(machine.id, comment, isolation_type)
            else:
                action = self.mde.unisolate(machine.id, comment)
        except ActionInProgress:
            again = isolation_state(self.mde.machine_actions(machine.id, (verb.action_type,)))
            ids = [again.id] if again is not None and again.active else []
            run.add(machine.label, "pending", "Defender: action already in progress", ids, **data)
            return again if ids else None
        except DefenderRejected as exc:  # e.g. OsPlatformNotSupported: this machine only
            run.failed(machine.label, exc, **data)
            return None
        except PackError as exc:
            run.add(machine.label, "failed", exc.message, **data)
            raise
        run.add(machine.label, "pending", f"{action.type} requested ({action.status})"
                + (f", {isolation_type}" if isolation_type else ""), [action.id], fresh=True, **data)
        return action

    def _isolation(self, machine_id: str) -> MachineAction | None:
        """The machine's newest Isolate / Unisolate that took or may take effect (None: never isolated).
        Unisolate actions matter only after an isolation, so they are read only when there is one."""
        isolations = self.mde.machine_actions(machine_id, (ISOLATE.action_type,))
        if isolation_state(isolations) is None:
            return None
        releases = self.mde.machine_actions(machine_id, (RELEASE.action_type,))
        return isolation_state(sorted(isolations + releases, key=lambda a: a.created, reverse=True))

    @staticmethod
    def _comment(case: Case, verb: Verb) -> str:
        """The Defender action comment: names the incident, so the device timeline says why."""
        what = "Isolated" if verb is ISOLATE else "Released from isolation"
        text = f"{what} by the sentinel-playbooks response playbook for Microsoft Sentinel {case.label}"
        if case.title:
            text += f": {case.title}"
        if case.incident_id:
            text += f" ({case.incident_id.rsplit('/', 1)[-1]})"
        return text[:1000]

    # -- the asynchronous operation -----------------------------------------------------------
    def _operation(self, run: ResponseRun, verb: Verb, actions: list[MachineAction]) -> str:
        """Name the pending actions' operation; its row is written when the run gives its leases back."""
        ids = sorted(a.id for a in actions)
        op = hashlib.sha256("|".join(ids).encode()).hexdigest()[:32]
        run.release_also.append(op_merge({  # merge: a retry naming the same actions keeps the row's final state
            "PartitionKey": STATE_PARTITION, "RowKey": OP_PREFIX + op, "verb": verb.name,
            "incident_id": run.case.incident_id or "", "case_label": run.case.label, "created_at": time.time(),
            "actions": json.dumps([{"id": a.id, "machineId": a.machine_id, "computerDnsName": a.computer_dns_name}
                                   for a in actions]),
        }))
        return op

    def status(self, reference: str) -> tuple[int, dict]:
        """State of an operation (or of one machine action id): 202 while pending, 200 when final."""
        row = self.ctx.state.get(STATE_TABLE, STATE_PARTITION, OP_PREFIX + reference) if _OP.match(reference) \
            else None
        if row is None and not GUID.match(reference):
            raise NotFound(f"no machine action or operation {reference[:40]!r}")
        wanted = json.loads(row["actions"]) if row else [{"id": reference}]
        actions: list[dict[str, Any]] = []
        for outcome in run_bounded(lambda item: self.mde.get_action(item["id"]), wanted,
                                   int(self.ctx.settings["RESPONSE_POOL_SIZE"])):
            action = outcome.get()
            if action is None and row is None:
                raise NotFound(f"Defender for Endpoint has no machine action {reference}")
            if action is None:
                # Defender gave us this id when it accepted the action: "not found" now is its hiccup, not a
                # final state. Answering Failed would end the playbook's wait on a guess; poll again instead.
                raise DownstreamError(f"Defender for Endpoint did not find machine action {outcome.item['id']} of "
                                      "this operation; polling again", code="DefenderActionNotFound",
                                      retry_after=POLL_SECONDS)
            actions.append(action.to_dict())
        statuses = [a["status"] for a in actions]
        if any(s in ACTIVE for s in statuses):
            return 202, {"status": "InProgress", "operation": reference, "actions": actions}
        overall = "Succeeded" if all(s == "Succeeded" for s in statuses) else \
            next((s for s in FAILED if s in statuses), "Failed")
        body: dict[str, Any] = {"status": overall, "operation": reference, "actions": actions}
        if row is not None:
            body["auditComment"], tasks = self._final_comment(row, overall, actions)
            if tasks:
                body["tasks"] = tasks
        return 200, body

    def _tasks(self, incident_id: str | None, machines: list[str | None]) -> list[dict]:
        """The analyst task of an isolation (core/tasks.py, outcome ``isolation``), naming the isolated machines."""
        names = sorted({m for m in machines if m})
        if not incident_id or not names:
            return []
        tasks = Tasks(self.ctx.sentinel, templates_from_setting(str(self.ctx.settings["INCIDENT_TASKS"] or "")))
        return [t.to_dict() for t in tasks.add(incident_id, "isolation", machine=", ".join(names))]

    def _final_comment(self, row: dict, overall: str, actions: list[dict]) -> tuple[str | None, list[dict]]:
        """One follow-up audit comment with the outcome (written once; its id is deterministic anyway) and, for an
        isolation that succeeded, the analyst task; the row is marked final only once both are written, so a
        failure of either is retried by the next poll."""
        verb = ISOLATE if row.get("verb") == "isolate" else RELEASE
        entries = [AuditEntry(str(a.get("computerDnsName") or a.get("machineId") or "?"),
                              "done" if a["status"] == "Succeeded" else "failed",
                              f"{a.get('type') or verb.action_type} {a['status']}", (str(a["id"]),))
                   for a in actions]
        incident = row.get("incident_id") or None
        action, key_parts = f"mde-{verb.name}", ("final", row["RowKey"].removeprefix(OP_PREFIX))
        tasks: list[dict] = []
        if row.get("final") != overall:
            AuditTrail(self.ctx.sentinel, budget=self.ctx.comments).record_followup(
                incident, str(row.get("case_label", "")), action, f"{verb.title}: {overall}", entries, key_parts)
            if verb is ISOLATE:
                tasks = self._tasks(incident, [a.get("computerDnsName") or a.get("machineId") for a in actions
                                               if a["status"] == "Succeeded"])
            updated = {k: v for k, v in row.items() if not k.startswith("_")} | {"final": overall}
            self.ctx.state.replace_if_unchanged(STATE_TABLE, updated, row["_etag"])
        return AuditTrail.followup_key(incident, action, key_parts), tasks


__all__ = ["ISOLATE", "OP_PREFIX", "POLL_SECONDS", "RELEASE", "MachineResponse", "isolation_state"]
