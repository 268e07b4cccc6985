"""Profile where an action's own time goes: ``python -m bench.profile [name-substring ...]``.

The overhead scenario (bench/overhead.py) reports each action's own time; when one misses the
5 ms p50 goal, this runs the same action in-process (the function called directly, the
emulators and Azurite as in the bench) under pyinstrument and writes the call tree to
``bench/profiles/<action>.txt``. Downstream waits show up as socket reads, so the tree shows
both what we compute and what we wait on.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from bench.common import ROOT
from bench.overhead import ACTIONS
from localdev.stack import Stack

PROFILES = ROOT / "bench" / "profiles"
CALLS = 30


def profile(names: list[str]) -> list[Path]:
    import azure.functions as func
    from pyinstrument import Profiler

    written = []
    with Stack() as stack:
        os.environ.update(stack.env())
        import function_app  # after the settings are in the environment, as in a deployment

        functions = {f.get_trigger().route: f.get_user_function() for f in function_app.app.get_functions()
                     if f.get_trigger().type == "httpTrigger"}
        PROFILES.mkdir(exist_ok=True)
        for action in ACTIONS:
            if names and not any(n in action.name for n in names):
                continue
            target = functions[action.route]

            def call(body: dict, target=target, route=action.route) -> None:
                request = func.HttpRequest("POST", f"http://localhost/api/{route}", body=_json(body),
                                           headers={"Content-Type": "application/json"})
                response = target(request)
                if response.status_code >= 400:
                    raise RuntimeError(f"{route}: {response.status_code} {response.get_body()[:300]!r}")

            call(action.make(stack))  # warm: clients built, tables created
            bodies = [action.make(stack) for _ in range(CALLS)]
            profiler = Profiler(interval=0.0005)
            profiler.start()
            for body in bodies:
                call(body)
            profiler.stop()
            path = PROFILES / (re.sub(r"[^a-z0-9]+", "-", action.name.lower()).strip("-") + ".txt")
            path.write_text(f"# {action.name}: {CALLS} calls in-process, pyinstrument\n"
                            + profiler.output_text(unicode=False, color=False, show_all=False))
            written.append(path)
    return written


def _json(body: dict) -> bytes:
    import json

    return json.dumps(body).encode()


if __name__ == "__main__":
    for written_path in profile(sys.argv[1:]):
        print(written_path.relative_to(ROOT))
