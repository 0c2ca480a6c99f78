"""The dashboard: server-rendered pages over a projection file, read-only.

``create_app(db_path, clock)`` returns a FastAPI application with these pages (GET only);
``clock`` is the deployment's processing time (``pcvhub.clock``), which alert ages count to:

==========================  ===================================================================
``/``                       overview: therapies by stage, doses, money, open alerts, refusals
``/therapies``              every therapy with its stage and next step (``?site=&stage=``)
``/therapies/{coi}``        one therapy: its chain of identity, who signed each step, the
                            verification state, the faults caught, its doses, QC and claims
``/inventory``              doses per site, location, placement method and status; lots
``/billing``                receivables ageing (chart), claims per payer, every claim
``/alerts``                 open and resolved alerts, every refusal of the gatekeeper
``/turnaround``             time in each step and vein-to-vein (charts), medians per site
``/charts/{name}.svg``      the charts, drawn on the server (see :mod:`pcvhub.web.charts`)
``/health``                 JSON: the file served and how much it holds
==========================  ===================================================================

Pages show chain-of-identity ids (CoIs), site, actor and key ids as the views expose them,
and never a patient pseudonym. Values read from the log are escaped (Jinja2 autoescape):
refusal reasons, for one, quote what an unknown sender wrote. Responses carry a content
security policy that allows nothing but this server's own styles and images, so a page
cannot load anything from elsewhere.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import jinja2
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from pcvhub.clock import Clock, SimulationClock, WallClock
from pcvhub.web import charts, queries
from pcvhub.web.identity import OUT_OF_USE
from pcvhub.web.source import DashboardError, ProjectionSource

HERE = Path(__file__).parent
PAGE_POLICY = ("default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
               "base-uri 'none'; frame-ancestors 'none'")
CHART_POLICY = "default-src 'none'; style-src 'unsafe-inline'"  # pygal styles its SVG inline
NAV = (("/", "Overview"), ("/therapies", "Therapies"), ("/inventory", "Inventory"),
       ("/billing", "Billing"), ("/alerts", "Alerts & refusals"), ("/turnaround", "Turnaround"))


# -- how values read -----------------------------------------------------------------------------

def when(value: datetime | None) -> str:
    """Event times in UTC, to the second (the pages say UTC once)."""
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(days: float | None) -> str:
    """A duration in the unit that reads best: 3.2 days, 5.1 hours, 42 seconds."""
    if days is None:
        return "—"
    unit = charts.unit_for([days])
    value = unit.of(days)
    return f"{value:,.0f} {unit.name}" if value >= 100 else f"{value:.3g} {unit.name}"


def money(amount: Decimal | float | None, currency: str | None = None) -> str:
    if amount is None:
        return "—"
    text = f"{amount:,.0f}" if Decimal(str(amount)) == Decimal(str(amount)).to_integral() \
        else f"{amount:,.2f}"
    return f"{text} {currency}" if currency else text


def short(value: str | None, keep: int = 12) -> str:
    """A hash or id cut to its first characters (the full value is in the title)."""
    if not value:
        return "—"
    return value if len(value) <= keep + 1 else value[:keep] + "…"


def human(event_type: str | None) -> str:
    """``DoseDispensed`` -> ``Dose dispensed``."""
    if not event_type:
        return "unreadable record"
    words = re.sub(r"(?<!^)(?=[A-Z])", " ", event_type).lower()
    return words[:1].upper() + words[1:]


def words(code: str | None) -> str:
    """``HOSPITAL_PHARMACIST`` -> ``hospital pharmacist``."""
    return "—" if not code else code.replace("_", " ").lower()


def age(raised_at: datetime | None, now: datetime | None) -> str:
    """How long an alert has stood, counted to ``now`` on the deployment's clock; a dash
    when that clock has no time yet (a simulation clock nobody moved) or is behind."""
    if raised_at is None or now is None or now < raised_at:
        return "—"
    return duration((now - raised_at) / timedelta(days=1))


def plural(count: int, noun: str) -> str:
    """``1 | plural('open alert')`` -> ``1 open alert``; 2 -> ``2 open alerts``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def roles(values: list[str] | None) -> str:
    return ", ".join(words(v) for v in values or []) or "—"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=when, duration=duration, money=money, short=short, human=human,
                       words=words, roles=roles, plural=plural, age=age)
    env.globals.update(nav=NAV, out_of_use=OUT_OF_USE)
    return env


# -- the application -------------------------------------------------------------------------------

def create_app(db_path: Path, clock: Clock | None = None) -> FastAPI:
    """The dashboard over the projection file ``db_path`` (checked now: DashboardError if it
    is missing, held by a runner, or not a projection file).

    :param clock: the clock the deployment's gatekeeper raises alerts by (the wall clock if
        None; a simulation clock for the demo's simulated weeks), so that an alert's age
        is counted on the clock its deadline was.
    """
    source = ProjectionSource(Path(db_path))
    clock = clock or WallClock()
    clock_name = "simulation clock" if isinstance(clock, SimulationClock) else "wall clock"
    templates = Jinja2Templates(env=_environment())
    app = FastAPI(title="pcvhub dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.source = source
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def page(request: Request, template: str, status_code: int = 200,
             **context: Any) -> HTMLResponse:
        context.update(request=request, path=request.url.path, db_path=source.path,
                       generated_at=datetime.now(UTC))
        return templates.TemplateResponse(request, template, context, status_code=status_code)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        kind = response.headers.get("content-type", "")
        response.headers.setdefault(
            "Content-Security-Policy", CHART_POLICY if kind.startswith("image/svg") else
            PAGE_POLICY)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.exception_handler(DashboardError)
    async def unavailable(request: Request, exc: DashboardError) -> HTMLResponse:
        return page(request, "error.html", 503, title="The projection file cannot be read",
                    message=str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:  # read-only: say so instead of a bare status
            return JSONResponse({"detail": "the dashboard is read-only: GET only"}, 405,
                                headers={"Allow": "GET, HEAD"})
        return page(request, "error.html", exc.status_code, title="Not found"
                    if exc.status_code == 404 else "Error", message=str(exc.detail))

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> HTMLResponse:
        with source.read() as reader:
            data = queries.overview(reader)
        return page(request, "overview.html", title="Overview", **data)

    @app.get("/therapies", response_class=HTMLResponse)
    def therapies(request: Request, site: str | None = Query(None),
                  stage: str | None = Query(None)) -> HTMLResponse:
        with source.read() as reader:
            data = queries.therapies(reader, site or None, stage or None)
        return page(request, "therapies.html", title="Therapies", **data)

    @app.get("/therapies/{coi}", response_class=HTMLResponse)
    def therapy(request: Request, coi: str) -> HTMLResponse:
        with source.read() as reader:
            found = queries.therapy(reader, coi)
        if found is None:
            raise HTTPException(404, f"No event of therapy {coi} is on the log (accepted or "
                                     "refused): check the chain-of-identity id.")
        return page(request, "therapy.html", title=f"Therapy {coi}", t=found)

    @app.get("/inventory", response_class=HTMLResponse)
    def inventory(request: Request) -> HTMLResponse:
        with source.read() as reader:
            data = queries.inventory(reader)
        return page(request, "inventory.html", title="Inventory", **data)

    @app.get("/billing", response_class=HTMLResponse)
    def billing(request: Request) -> HTMLResponse:
        with source.read() as reader:
            data = queries.billing(reader)
        return page(request, "billing.html", title="Billing and receivables", **data)

    @app.get("/alerts", response_class=HTMLResponse)
    def alerts(request: Request) -> HTMLResponse:
        with source.read() as reader:
            data = queries.alerts(reader)
        now_us = clock.now_us()
        now = datetime.fromtimestamp(now_us / 1e6, UTC) if now_us > 0 else None
        return page(request, "alerts.html", title="Alerts and refusals", now=now,
                    clock_name=clock_name, **data)

    @app.get("/turnaround", response_class=HTMLResponse)
    def turnaround(request: Request) -> HTMLResponse:
        with source.read() as reader:
            data = queries.turnaround(reader)
        return page(request, "turnaround.html", title="Turnaround", **data)

    @app.get("/charts/{name}.svg")
    def chart(name: str, currency: str | None = Query(None)) -> Response:
        with source.read() as reader:
            if name == "vein-to-vein":
                svg = charts.vein_to_vein(queries.turnaround(reader)["measures"]["vein to vein"])
            elif name == "stage-durations":
                measures = queries.turnaround(reader)["measures"]
                svg = charts.stage_durations(
                    {k: v for k, v in measures.items() if k != "vein to vein"})
            elif name == "receivables-ageing" and currency:
                svg = charts.receivables_ageing(queries.receivables(reader), currency)
            elif name == "doses-by-site":
                svg = charts.doses_by_site(queries.stock_by_site(reader))
            else:
                raise HTTPException(404, f"no chart {name!r}")
        return Response(svg, media_type="image/svg+xml",
                        headers={"Cache-Control": "no-store"})

    @app.get("/health")
    def health() -> dict[str, Any]:
        with source.read() as reader:
            return {"db": str(source.path),
                    "therapies": reader.value("SELECT count(*) FROM case_status"),
                    "log_records": reader.value("SELECT count(*) FROM log.envelopes")}

    return app
