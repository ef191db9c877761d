"""Topic names and their creation, shared by the streamer, the workers and the stack.

Topics are created up front (idempotently) by whichever service starts first, with the
partition counts of :class:`contracts.settings.SharedSettings`, so the count no longer
depends on who came first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

log = logging.getLogger(__name__)

UTTERANCES_TOPIC = "utterances"
EMOTIONS_TOPIC = "emotions"
DEAD_LETTER_TOPIC = "cberl-dead-letter"

_TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code


class TopicError(RuntimeError):
    """The broker refused to create a topic."""


async def ensure_topics(bootstrap_servers: str, topics: Mapping[str, int],
                        replication_factor: int = 1, timeout_s: float = 30.0,
                        **client: Any) -> None:
    """Create the topics that do not exist yet (``{name: partitions}``); idempotent.

    Existing topics are left as they are, whatever their partition count. ``client``: more
    admin-client arguments (:meth:`contracts.settings.SharedSettings.kafka_security`).

    Raises:
        TopicError: The broker refused to create a topic.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers,
                                request_timeout_ms=int(timeout_s * 1000), **client)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, partitions, replication_factor)
                   for name, partitions in topics.items() if name not in existing]
        if not missing:
            return
        response = await admin.create_topics(missing, timeout_ms=int(timeout_s * 1000))
        for error in response.topic_errors:
            name, code = error[0], error[1]
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise TopicError(f"broker {bootstrap_servers} refused to create topic {name!r}: "
                                 f"error code {code} {error[2:]}")
        log.info("created topics %s on %s", [t.name for t in missing], bootstrap_servers)
    finally:
        await admin.close()
