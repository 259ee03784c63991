"""Kafka ingest: a consumer group feeding the same normalize + store pipeline as the Ingest RPCs.

``healthai ingest-kafka`` (:mod:`.cli`) runs :class:`.consumer.KafkaIngest`. confluent-kafka
(librdkafka, bundled in its wheel) is imported lazily, only by the consumer: the serving install
does not need it (``pip install 'healthai[kafka]'`` or ``confluent-kafka`` from requirements-dev).
"""
