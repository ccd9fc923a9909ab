"""Scale-out on Ray: the job server's jobs run on Ray actors, one per GPU, with models kept warm.

- ``actor.JobActor``: runs whole jobs (progress streamed back) and single SEVA windows for other actors.
- ``dispatch.RayWorker``: the server's worker when it serves with ``--ray``: FIFO, queue limit,
  cancel, retry on a lost actor, results written to the job store exactly once.
- ``batch``: ``python -m backend ray-batch JOBS_DIR``, a folder of job folders on the cluster.

Ray is imported only here and only when a cluster is used (``pip install ray``).
"""
