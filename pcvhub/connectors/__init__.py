"""Worker floor: the connectors, which turn outside messages into signed events and talk to
the other workers only through Kafka topics.

How it fits together
--------------------
Open :mod:`.core` first. A :class:`~.core.Connector` is one connector's identity (its
registered actor and newest key), its view of the log (the chain heads, the key
registry, the patient index and the bedside checks, all rebuilt from the log through the
one log reader, :mod:`pcvhub.log`) and the one way it writes: ``emit`` issues, signs and
durably writes events to its ingress topic, ``record_refusal`` writes what it refused to
the rejected topic, ``wait_verdict`` waits for the gatekeeper's answer.

What the core is made of, one concept per module:

- :mod:`.outcome`: the one answer a connector gives about an input (accepted, refused
  with its rule, code, reason and every problem, or pending), which each protocol says in
  its own terms;
- :mod:`.identity`: a patient's keyed pseudonym (no MRN leaves a connector) and the
  event id an outside message always maps to (a repeat is written once);
- :mod:`.patients`: the patient index, pseudonym -> the therapy's chain of identity;
- :mod:`.bedside`: the bedside identity check each dose administration must name;
- :mod:`.writer`: durable writes, acknowledged by Kafka before anyone is told "accepted".

Who may call a connector:

- :mod:`.tls`: the deployment's certificate authority for the endpoints;
- :mod:`.callers`: caller authentication (TLS client certificates, bearer tokens), always
  bound to a key registered on the log.

The protocols, each a package or module over a ``Connector``:

- :mod:`.hl7`: HL7 v2.5.1 over MLLP with mutual TLS, one ACK per message;
- :mod:`.fhir`: FHIR R4 REST with bearer tokens, one OperationOutcome per refusal;
- :mod:`.drop_folder`: the folder the next three are fed by (watch, settle, result file,
  ``done/`` and ``failed/``) and what each does with each entry of a file;
- :mod:`.mes`: the MES / LIMS connector (CSV and JSON rows in a drop folder);
- :mod:`.loggers`: couriers' and sites' data logger files (readings -> the hub judges the
  cold chain), read as the MES files are;
- :mod:`.payer`: claims out (X12 837P, FHIR Claim) and remittances in (X12 835).

And around them: :mod:`.serve` (``pcvhub serve``: every connector of a deployment in one
process) and :mod:`.registrar` (putting a registry event on the registry chain).
"""
