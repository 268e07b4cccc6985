"""Microsoft Graph ``GET /v1.0/domains`` on loopback: the tenant's domains.

The contract (Graph v1.0, "List domains", learn.microsoft.com/graph/api/domain-list): a bearer token for
https://graph.microsoft.com (else 401); application permission Domain.Read.All (least privileged), without
which Graph answers 403 ``Authorization_RequestDenied`` "Insufficient privileges to complete the
operation."; 200 ``{"@odata.context", "value": [domain]}``, each domain with ``id`` (the name),
``authenticationType``, ``isDefault``, ``isInitial``, ``isRoot``, ``isVerified``, ``supportedServices``
(domain resource type); ``$select`` narrows the properties; a long list continues in ``@odata.nextLink``.

``install_domains(emulator, authority)`` adds the route to the Graph emulator (same base URL) and returns
the ``Directory``: its ``domains``, ``readable`` (False: the app lacks Domain.Read.All) and ``page_size``.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlencode

from localdev.emulators.base import Emulator, Request, Response
from localdev.emulators.entra import GRAPH_AUDIENCE

CONTEXT = "https://graph.microsoft.com/v1.0/$metadata#domains"
SEEDED = (("contoso.com", True, True, False), ("contoso.onmicrosoft.com", True, False, True),
          ("corp.contoso.com", True, False, False), ("fabrikam-pending.com", False, False, False))


class Directory:
    def __init__(self, emulator: Emulator, authority: Any = None) -> None:
        self.emulator = emulator
        self.authority = authority
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.readable = True
            self.page_size = 100
            self.domains: list[dict] = []
        for name, verified, default, initial in SEEDED:
            self.add(name, verified=verified, default=default, initial=initial)

    def add(self, name: str, *, verified: bool = True, default: bool = False, initial: bool = False) -> None:
        with self._lock:
            self.domains.append({"id": name, "authenticationType": "Managed", "isDefault": default,
                                 "isInitial": initial, "isRoot": name.count(".") == 1, "isVerified": verified,
                                 "supportedServices": ["Email"] if verified else []})

    def handle(self, req: Request) -> Response:
        if self.authority is not None and (denied := self.authority.check(req, GRAPH_AUDIENCE)):
            return denied
        if not self.readable:
            return Response(403, {"error": {"code": "Authorization_RequestDenied",
                                            "message": "Insufficient privileges to complete the operation."}})
        select = [s.strip() for s in req.query.get("$select", "").split(",") if s.strip()]
        start = int(req.query.get("$skiptoken") or 0) if (req.query.get("$skiptoken") or "0").isdigit() else 0
        with self._lock:
            page = self.domains[start:start + self.page_size]
            more = start + self.page_size < len(self.domains)
        value = [{k: v for k, v in d.items() if not select or k in select or k == "id"} for d in page]
        body: dict[str, Any] = {"@odata.context": CONTEXT, "value": value}
        if more:
            query = {k: v for k, v in req.query.items() if k != "$skiptoken"} | {"$skiptoken": start + self.page_size}
            body["@odata.nextLink"] = f"{self.emulator.url}{req.path}?" + urlencode(query, safe="$,")
        return Response(200, body)


def install_domains(emulator: Emulator, authority: Any = None) -> Directory:
    directory = Directory(emulator, authority)
    emulator.route("GET", r"/v1\.0/domains", directory.handle)
    return directory
