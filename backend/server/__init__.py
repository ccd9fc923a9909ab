"""HTTP server for jobs (DESIGN §5): FastAPI app, job store on disk, one GPU worker.

``python -m backend serve`` runs it; ``backend.client`` talks to it; ``launcher`` starts and
stops a local one (used by the Blender add-on, which never imports torch for this).
"""
