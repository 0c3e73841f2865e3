"""Server-rendered console pages."""
from officina.web.console.views import bp

__all__ = ["bp"]
