"""The worker registry: which Celery workers run, on what machines, and whether one can take GPU jobs.

Each worker reports itself on a heartbeat (:func:`webapp.fleet.services.worker_heartbeat`); a worker is live
while its last beat is younger than ``settings.CONDENSE_WORKER_TIMEOUT_S`` and it has not said it stopped.
"""
