"""HL7 v2.5.1 over MLLP: checked messages (``messages``), their events (``mapping``) and the
mutual-TLS listener that answers each with an ACK (``listener``)."""

from pcvhub.connectors.hl7.listener import MllpListener, frame
from pcvhub.connectors.hl7.mapping import MessageMapper

__all__ = ["MessageMapper", "MllpListener", "frame"]
