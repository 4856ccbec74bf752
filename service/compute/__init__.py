"""Where the analyses run: the only package that imports `distributed`.

- `tasks`: the module-level functions Dask workers run (plain data in and out).
- `config`: DASK_* settings as dask.config keys and LocalCluster arguments.
- `stream`: the pipeline's async compute handle (scatter, submit, retry, fall back).
- `sync`: the compat API's blocking compute for one `with` block.
"""
