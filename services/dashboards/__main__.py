"""``python -m services.dashboards``: (re)write charts/ai-factory-twin/files/dashboards."""

from services.dashboards.files import write

for path in write():
    print(f"wrote {path}")
