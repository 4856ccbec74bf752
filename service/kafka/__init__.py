"""The Kafka adapter: the only package that imports `confluent_kafka`.

Nothing is re-exported here on purpose: `service.kafka.message` and
`service.kafka.errors` stay importable by pure code without loading the
Kafka client; import the modules you need (consumer, producer, admin, restore).
"""

__all__: list[str] = []
