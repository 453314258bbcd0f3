"""The JSON API: FastAPI routes, authentication, error shapes, `/health` and `/metrics`.

Owns the app and its routers. Entry points stay thin: parse, build a command or a query, call the
application or the read store, map errors.
May import: domain, events, projections, services.commands, services.access, services.audit,
services.scoring (KPI reads), services.kafka (lag, AsyncAPI), services.operations, services.web,
services.projector_service, services.tasks, services.settings, services.transparency (proof
bounds).
"""
