"""The operator web console: an ASGI app (Starlette) over the twin's public gRPC APIs.

One upstream ``TwinService.Watch`` stream fans out to every browser over Server-Sent
Events; run control and what-if studies are POSTs that need the operator token; every
script and style is served from this package (no CDN). ``twin serve console`` runs it,
``twin up`` starts it beside the twin.
"""

from services.console.app import create_app as create_app
from services.console.config import ConsoleConfig as ConsoleConfig
