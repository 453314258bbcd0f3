"""The names Kafka knows our consumers by, and the header a command's sender signs with.

They live with the Kafka plumbing, not with the consumers that use them, because the lag reader
and the AsyncAPI document need them too: kept here, those two read them without importing the
command side or the scorer (which both import `services.kafka`), so the packages form no cycle.
"""

from __future__ import annotations

COMMAND_HANDLER_GROUP = "okr-command-handler"
"""The `okr.commands` consumer's group, after the deployment's topic prefix."""
SCORER_GROUP = "okr-scorer"
"""The scorer's group, after the deployment's topic prefix (environments sharing a cluster must
not share a group: a rebalance would hand one environment's partitions to another's scorer)."""
PRINCIPAL_HEADER = "principal"
"""The Kafka header naming the service that sends a command (UTF-8)."""
