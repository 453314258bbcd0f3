"""The transactional outbox: stored events to `okr.events`, in order, at least once.

Owns the relay (`publisher`) and the wake-up that lets followers of the notification log sleep
until something is stored (`wakeup`).
May import: domain, events, projections, services.commands, services.kafka, services.settings.
"""
