"""The Grafana dashboards of the chart (charts/ai-factory-twin/files/dashboards/*.json),
generated from ``boards`` by ``python -m services.dashboards``; a test keeps the committed
files equal to the generator's output."""

from services.dashboards.boards import DASHBOARDS as DASHBOARDS
from services.dashboards.files import FOLDER as FOLDER
from services.dashboards.files import render as render
