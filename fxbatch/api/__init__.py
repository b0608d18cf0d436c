"""The fxbatch HTTP API (``/api/v1``): FastAPI routes over one Workbench; no Streamlit here.

>>> from starlette.routing import Mount
>>> routes = [Mount("/api", app=create_api(lambda: wb))]
"""

from fxbatch.api.app import create_api
from fxbatch.api.tables import ARROW
from fxbatch.models import RunView

__all__ = ["ARROW", "RunView", "create_api"]
