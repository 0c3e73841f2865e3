"""The prediction server: deployed model versions behind ``POST /v1/deployments/<name>/predict``.

``app`` (the Flask factory and error handling), ``router`` (deployments from Postgres, hot swap),
``batcher`` (dynamic batching), ``predlog`` (prediction logging), ``tokens`` (cached token auth).
Run with ``gunicorn officina.workers.serving.wsgi:app``; see docs/serving.md.
"""
