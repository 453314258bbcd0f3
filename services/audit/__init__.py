"""What auditors ask: past states, decision history, exports, verification.

Owns the state of an objective at a past version or moment (`past_states`, `past_state_view`),
the decision history (`history`), exports (`export`) and the check of the store and the topic
against the hash chains (`verify`).
May import: domain, events, projections, services.commands, services.kafka, services.relay
(the wire form of an event), services.settings.
"""
