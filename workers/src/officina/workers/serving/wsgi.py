"""WSGI entrypoint for gunicorn: ``gunicorn officina.workers.serving.wsgi:app`` (one app per worker)."""
from officina.platform.logs import configure
from officina.platform.settings import Settings
from officina.workers.serving.app import create_app

_settings = Settings()
configure(_settings.log_level)
app = create_app(_settings)
