"""The read-only web dashboard (top floor) over the DuckDB projections.

``create_app(db_path)`` builds the FastAPI application (pages in :mod:`pcvhub.web.app`);
``serve_dashboard(db_path, host, port)`` serves it in the background and returns its URL.
"""

from pcvhub.web.app import create_app
from pcvhub.web.server import DashboardServer, serve_dashboard
from pcvhub.web.source import DashboardError

__all__ = ["DashboardError", "DashboardServer", "create_app", "serve_dashboard"]
