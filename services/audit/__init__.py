"""What auditors ask: past states, decision history, exports, verification.

Owns the state of an objective at a past version or moment (`past_states`, `past_state_view`),
the decision history (`history`), exports (`export`), the check of the store and the topic
against the hash chains (`verify`), and the transparency log in use: checkpoints signed and
published (`checkpoints`), proofs (`proofs`) and the check against a kept checkpoint
(`tampering`).
May import: domain, events, projections, services.commands, services.kafka, services.relay
(the wire form of an event, the producer), services.settings, services.transparency.
"""
