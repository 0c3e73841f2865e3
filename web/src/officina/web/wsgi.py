"""WSGI entrypoint for gunicorn: ``gunicorn officina.web.wsgi:app``."""
from officina.platform.logs import configure
from officina.platform.settings import Settings
from officina.web.app import create_app

_settings = Settings()
configure(_settings.log_level)
app = create_app(_settings)
