"""FHIR R4 REST: resources mapped to events (``mapping``) and the FastAPI app and its
uvicorn server (``app``)."""

from pcvhub.connectors.fhir.app import FhirServer, create_app
from pcvhub.connectors.fhir.mapping import ResourceMapper

__all__ = ["FhirServer", "ResourceMapper", "create_app"]
