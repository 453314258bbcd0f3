"""The transactional outbox: stored events to `okr.events`, in order, at least once.

Owns the relay (`publisher`), the one lock that lets a single relay of a fleet publish
(`leadership`), the follower of the notification log that the relay and the scorer's bindings
follower share (`follower`), and the wake-up that lets such followers sleep until something is
stored (`wakeup`); how far behind the relay is (`publisher.relay_lag`).
May import: domain, events, projections, services.commands, services.kafka, services.settings,
services.stores.
"""
