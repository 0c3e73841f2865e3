"""The JSON API under /api/v1: one nested blueprint per area."""
from flask import Blueprint

from officina.web.api import accounts, builds, datasets, fleet, jobs, models, runs, studies, teams

bp = Blueprint("api", __name__, url_prefix="/api/v1")
bp.register_blueprint(accounts.bp)
bp.register_blueprint(teams.bp)
bp.register_blueprint(datasets.bp)
bp.register_blueprint(builds.bp)
bp.register_blueprint(builds.lineage_bp)
bp.register_blueprint(jobs.bp)
bp.register_blueprint(runs.bp)
bp.register_blueprint(fleet.bp)
bp.register_blueprint(studies.bp)
bp.register_blueprint(fleet.scheduler_bp)
bp.register_blueprint(fleet.quotas_bp)
bp.register_blueprint(models.bp)
