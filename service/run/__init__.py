"""`sfa run`: one instance of the Kafka service, and the parts only it uses.

    core.py        every decision (rebalances, twin pairing, restore, backpressure, the
                   failure policy, stop, readiness) as a pure machine: events in,
                   instructions out (events.py holds both)
    shell.py       `Service`: carries the instructions out on the clients and reports
                   what they did; decides nothing
    startup.py     the start-up steps the core asks for, one by one
    accounting.py  what a committed batch adds to the metrics and the progress line
    stop.py        the exception a stop request raises in a step it overtook
    lanes.py       daemon threads for blocking client calls
    metrics.py     the Prometheus families; health.py /healthz and /readyz verdicts
    probes.py      the probe helper process that answers them within 100 ms
    queries.py     GET /symbols/{symbol}; progress.py the progress line

Nothing is imported here: the probe helper imports `service.run.probes` and must stay
free of numpy, pandas and the Kafka client (`from service.run.shell import Service`).
The consumer's librdkafka callbacks (`service.kafka.consumer`) only report what was
assigned, revoked or lost; the shell hands that to the core.
"""
