"""The function app: one FunctionApp composed of one Blueprint per area, and telemetry set-up. Nothing else.

Keep imports here light: they are paid at every cold start. Areas import their heavy SDKs
inside the functions that use them; telemetry imports OpenTelemetry only when Application
Insights is configured.
"""

import azure.functions as func

from core import telemetry
from core.health import bp as health
from core.signin_routes import bp as sign_in
from enrichment.functions import bp as enrichment
from orchestration.functions import bp as orchestration
from response.functions import bp as response
from sync.functions import bp as sync

telemetry.configure()  # log records carry action and incident; traces when APPLICATIONINSIGHTS_CONNECTION_STRING is set
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(health)
app.register_functions(sign_in)
app.register_functions(enrichment)
app.register_functions(orchestration)
app.register_functions(response)
app.register_functions(sync)
