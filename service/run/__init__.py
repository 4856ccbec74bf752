"""`sfa run`: one instance of the Kafka service, as a pure core and a shell.

    core.py    every decision (rebalances, twin pairing, restore, backpressure, the
               failure policy, stop, readiness) as a pure machine: events in,
               instructions out (events.py holds both)
    shell.py   carries the instructions out on the clients and reports what they did;
               decides nothing
    startup.py the start-up steps the core asks for, one by one

The consumer's librdkafka callbacks (`service.kafka.consumer`) only report what was
assigned, revoked or lost; the shell hands that to the core.
"""

from service.run.shell import Service

__all__ = ["Service"]
