"""The physical limit of each action: its longest chain of dependent calls under a latency profile.

An action cannot answer sooner than the calls that must happen one after another: a verdict needs its
look-up, the comment needs the verdicts. Independent calls can run side by side, ``pool`` at a time
(issue #16: a pool size setting, default 16), so ``n`` of them cost ``ceil(n / pool)`` rounds. What each
action must do is written down here as data, step by step, with the reason; the bench divides the measured
median by the chain's time (goal: <= 1.3x) and prints the chain beside it, so a reader can check both.

Calls the pack may make off the critical path (cache writes, lock releases, audit rows written after the
answer) are not in a chain. Token requests are not either: a warm process has its tokens (one request
per audience per process, core/credentials.py), and the cold-start scenario measures the first ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_POOL = 16  # issue #16 item 1: "a pool size setting, default 16"
LOGIC_APP_FOREACH = 20  # For each runs 20 iterations at a time by default (Logic Apps limits and configuration)


@dataclass(frozen=True)
class Step:
    """``rounds`` sequential round trips to ``service`` (a latency-profile name); ``also`` runs beside it."""

    service: str
    why: str
    rounds: int = 1
    also: tuple[str, ...] = ()  # services called at the same time (the step costs the slowest)

    def seconds(self, profile: dict[str, float]) -> float:
        return self.rounds * max(profile.get(s, 0.0) for s in (self.service, *self.also))

    def label(self) -> str:
        names = " | ".join((self.service, *self.also))
        names = f"({names})" if self.also else names
        return f"{self.rounds}x{names}" if self.rounds != 1 else names


@dataclass(frozen=True)
class Chain:
    """The calls an action must make one after another; ``note``: one sentence the bench row shows beside them
    (why a goal this chain cannot meet is missed)."""

    steps: tuple[Step, ...]
    note: str = ""

    def seconds(self, profile: dict[str, float]) -> float:
        return sum(step.seconds(profile) for step in self.steps)

    def describe(self) -> str:
        calls = " + ".join(step.label() for step in self.steps if step.rounds)
        return f"{calls} ({self.note})" if self.note else calls

    def reasons(self) -> list[str]:
        return [f"{step.label()}: {step.why}" for step in self.steps if step.rounds]


def rounds(n: int, pool: int) -> int:
    return math.ceil(n / max(1, pool)) if n else 0


def enrichment(ips: int, pool: int = DEFAULT_POOL, *, cached: bool = False, malicious: bool = False) -> Chain:
    """``malicious``: a look-up finds a malicious address, so the run creates a review task (core/tasks.py)."""
    if cached:
        return Chain((
            Step("storage", "the cached verdicts (a query per 15 addresses, side by side); when this process holds "
                            "them, the review task's claim in the task memo (core/tasks.py), if one is created"),
            Step("sentinel-arm", "the comment (the label and the review task beside it)"),
        ))
    looked_up, reference_rounds = rounds(ips, pool), rounds(ips, LOGIC_APP_FOREACH)
    # With fewer look-ups at a time than the reference's For each, more rounds than it: slower by design.
    note = (f"{pool} look-ups at a time take {looked_up} VirusTotal rounds where the reference's For each, "
            f"{LOGIC_APP_FOREACH} at a time, takes {reference_rounds}: slower than it at this pool size "
            f"(VIRUSTOTAL_POOL_SIZE={LOGIC_APP_FOREACH} is not)") if looked_up > reference_rounds else ""
    # The review task is claimed in the task memo at the first malicious verdict and written only after that claim
    # (an analyst's closed task is never reopened): with one round of look-ups, that claim follows the last answer.
    task_claim = 1 if malicious and looked_up == 1 else 0
    return Chain((
        Step("storage", "the cached verdicts: none found (the first look-ups' claims go beside that read; a claim "
                        "that wins proves there is no row, so its look-up needs no second round trip)"),
        Step("virustotal", f"{ips} look-ups, {pool} at a time (the later ones claimed while they wait)",
             rounds(ips, pool)),
        Step("storage", "the review task's claim in the task memo, which can start only at the first malicious "
                        "verdict (here, in the one round of look-ups) and must precede the task's write", task_claim),
        Step("sentinel-arm", "the comment with every verdict (the label and the review task beside it: the task "
                             "was claimed in the task memo at the first malicious verdict)"),
    ), note=note)


def isolate(machines: int, pool: int = DEFAULT_POOL) -> Chain:
    """Machines named by MdatpDeviceId (as Defender's alerts name them). Two chains of equal length lead to the
    isolate requests and run side by side: lease the machines (one conditional insert), then read each machine's
    isolation actions inside its lease (idempotency: never isolate a machine again while its isolation is pending or
    done); and read each machine (it exists, its name matches the entity, its tags are not protected), then spend the
    incident's blast-radius budget on the machines that passed (the guardrail comes before any write, and counts only
    real, unprotected machines). The second chain (defender + storage) costs what the first does; written as the
    first."""
    r = rounds(machines, pool)
    return Chain((
        Step("storage", "lease the machines (one conditional insert); beside it each machine is read from Defender, "
                        "then the budget is spent on those that passed the guardrails", r),
        Step("defender", "each machine's isolation actions, read inside its lease", r),
        Step("defender", "the isolate request of each machine", r),
        Step("sentinel-arm", "the audit comment (its entries stored and the leases given back beside it)"),
    ))


def notify() -> Chain:
    return Chain((
        Step("storage", "claim the send-once rows (Teams and Slack side by side)"),
        Step("teams-webhook", "the card and the Slack message, side by side", also=("slack-webhook",)),
        Step("storage", "mark them sent"),
    ))


def sync_create() -> Chain:
    return Chain((
        Step("servicenow", "is there a ticket of this incident already (one a lost state table or an earlier "
             "deployment left), beside the claim of the incident's link (a conditional insert: one ticket for "
             "concurrent triggers; its answer carries the etag)", also=("storage",)),
        Step("servicenow", "create the ticket"),
        Step("sentinel-arm", "the ticket's label on the incident (one PUT with the trigger's etag; a 409 reads again) "
             "beside the audit comment and the ticket -> incident index (the ticket number in each) and the list of "
             "the incident's comments (one another playbook added since the trigger fired becomes a work note)",
             also=("storage",)),
        Step("storage", "record the link (ticket, merge base, comment written): only after the incident writes, so a "
             "failure leaves the pair to be adopted, never marked done"),
    ))


def close(with_ticket: bool = True) -> Chain:
    """close-incident (orchestration/close.py): the incident's read then its close (the comment beside it), and,
    beside those from the start, the ticket's resolution (sync ServiceNowSync.close_ticket), the longer branch."""
    if not with_ticket:
        return Chain((
            Step("sentinel-arm", "read the incident (its etag and the comment budget's count)"),
            Step("sentinel-arm", "close it (the closing comment beside it)"),
        ))
    return Chain((
        Step("storage", "the ticket's link (its sys_id and merge base), read beside the incident (sentinel-arm)"),
        Step("storage", "the pair's lease (another run may be writing the ticket: its fields would be lost)"),
        Step("servicenow", "resolve the ticket, the closing comment as a work note, in one PATCH (the incident's "
                           "close and comment, sentinel-arm, finish beside it)"),
        Step("storage", "save the link with what the PATCH answered, which gives the lease back"),
    ), note="the incident's branch, sentinel-arm + sentinel-arm, runs beside these")


def poll(changed: int, page: int, pool: int = DEFAULT_POOL, *, max_pages: int = 20) -> Chain:
    """The poll (sync/poll.py) bringing ``changed`` tickets into Sentinel, ``page`` tickets per ServiceNow page and
    at most ``max_pages`` pages per run (``SERVICENOW_POLL_MAX_PAGES``): runs back to back until all are in."""
    if not changed:
        return Chain((
            Step("storage", "the cursor (where the last run stopped)"),
            Step("servicenow", "one page: nothing changed"),
        ))
    pages = math.ceil(changed / max(1, page))
    runs = math.ceil(pages / max(1, max_pages))
    ticket_rounds = sum(rounds(min(page, changed - n * page), pool) for n in range(pages))
    return Chain((
        Step("storage", "each run reads the cursor the run before saved", runs),
        Step("servicenow", "each run's first page of changes (a later page starts after the last row of the one "
             "before, so it is read while that one is applied)", runs),
        Step("storage", "that page's links (the merge base of each ticket; batched reads side by side)", runs),
        Step("servicenow", "that page's work notes and comments, one query (which tickets are due, and since "
             "when, is known only from their links)", runs),
        Step("sentinel-arm", f"read each incident (its etag and current fields), {pool} tickets at a time, "
             "page by page (the cursor passes a page only once each of its tickets is in)", ticket_rounds),
        Step("sentinel-arm", "update each incident with the merged fields (etag-guarded)", ticket_rounds),
        Step("storage", "save each page's links once its incidents are written (one transaction per page; saved "
             "before the incident, a failed write would leave a link claiming it)", pages),
        Step("storage", "each run saves the cursor (and its record, one transaction) after the links: a cursor "
             "past a link not saved would skip that ticket's bookkeeping", runs),
    ))


def reference(ips: int, foreach: int = LOGIC_APP_FOREACH) -> Chain:
    """Azure-Sentinel's Get-VirusTotalIPReport: For each IP (20 at a time), one look-up then one comment."""
    r = rounds(ips, foreach)
    return Chain((
        Step("virustotal", f"each IP's report, {foreach} at a time", r),
        Step("sentinel-arm", "each IP's comment, in the same iteration", r),
    ))
