"""Files in and out of the pipeline (`sfa replay`, `sfa produce`).

- `readers`: JSONL (optionally gzip), CSV and Parquet into batches of message values.
- `source`: replay's source: the readers and the decoder in one helper process.
- `sink`: results and dead letters as JSONL files.
- `replay`: files through the shared pipeline on a local Dask cluster.
"""
