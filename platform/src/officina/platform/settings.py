"""Typed settings for every Officina process, read from ``OFFICINA_*`` environment variables.

Each entrypoint builds one ``Settings`` and passes it down; nothing else reads ``os.environ``.
Where a service URL is unset, the embedded stack (``officina.infra``) provides that service.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration of one Officina installation."""

    model_config = SettingsConfigDict(env_prefix="OFFICINA_", frozen=True, extra="ignore")

    home: Path = Field(
        default=Path(".officina"),
        description="Data dir: embedded services' data, logs, generated secrets.",
    )
    database_url: str | None = Field(
        default=None, description="PostgreSQL URL; unset starts the embedded PostgreSQL."
    )
    s3_endpoint: str | None = Field(
        default=None, description="S3 endpoint as host:port; unset starts the embedded S3 server."
    )
    s3_access_key: SecretStr | None = Field(default=None, description="S3 access key.")
    s3_secret_key: SecretStr | None = Field(default=None, description="S3 secret key.")
    s3_secure: bool = Field(default=False, description="Use HTTPS to reach S3.")
    s3_region: str | None = Field(default=None, description="S3 region, where the server needs one.")
    s3_bucket: str = Field(default="officina", description="Bucket holding all Officina objects.")
    broker_url: str | None = Field(
        default=None, description="Redis URL for Celery; unset starts the embedded Redis."
    )
    web_host: str = Field(default="127.0.0.1", description="Address the web server binds.")
    web_port: int = Field(default=8080, description="Port the web server binds.")
    public_url: str | None = Field(
        default=None, description="URL users reach the web app at; defaults to http://web_host:web_port."
    )
    secret_key: SecretStr | None = Field(
        default=None, description="Signs sessions; unset uses one generated once under the data dir."
    )
    max_body: int = Field(default=64 * 1024 * 1024, description="Largest request body in bytes.")
    max_file: int = Field(default=100 * 1024**3,
                          description="Largest file a dataset version may hold, in bytes (sent in parts).")
    max_code_bundle: int = Field(default=50 * 1024 * 1024,
                                 description="Largest code bundle (a job's packed code directory) in bytes.")
    job_lease_s: float = Field(default=30.0, description="Seconds a running job's lease lasts without a "
                                                         "heartbeat before the job is retried elsewhere.")
    job_sweep_s: float = Field(default=5.0, description="Seconds between sweeps for expired leases and "
                                                        "undelivered job messages.")
    worker_lost_s: float = Field(default=30.0, gt=0, description="Seconds without a heartbeat after which a "
                                 "worker is marked lost (its GPU leases are released, its jobs requeued).")
    scheduler_interval_s: float = Field(default=2.0, gt=0, description="Seconds between scheduling passes when "
                                        "nothing wakes the scheduler earlier (submits, finishes and quota "
                                        "changes do).")
    preempt_grace_s: float = Field(default=30.0, ge=0, description="Seconds a preempted job has after SIGTERM "
                                   "to checkpoint and exit before it is killed.")
    web_workers: int = Field(default=2, description="gunicorn worker processes for the web app.")
    web_threads: int = Field(default=8, description="Threads per web worker process (requests served at once).")
    worker_processes: int = Field(default=1, description="Celery worker processes `officina up` starts.")
    worker_concurrency: int = Field(default=2, description="Tasks one Celery worker process runs at once.")
    worker_simulated_gpus: int = Field(default=0, ge=0, le=64, description="GPUs a worker declares without having "
                                       "them (tests, demos): jobs get their indices and run on the CPU.")
    worker_queues: str = Field(default="cpu,gpu,io", description="Queues the started workers consume.")
    serving_host: str = Field(default="127.0.0.1", description="Address the prediction server binds.")
    serving_port: int = Field(default=8090, description="Port the prediction server binds.")
    serving_url: str | None = Field(default=None, description="Base URL clients use for predictions "
                                    "(default: http://serving_host:serving_port).")
    serving_processes: int = Field(default=2, ge=0, description="Prediction server processes (replicas) `officina up` "
                                   "starts behind one port.")
    serving_threads: int = Field(default=64, ge=1, description="Requests one prediction server handles at once.")
    serving_max_rows: int = Field(default=1024, ge=1, description="Most rows one prediction request may carry.")
    serving_reload_s: float = Field(default=1.0, gt=0, description="Seconds between the prediction server's "
                                    "checks for changed deployments.")
    token_ttl_days: int = Field(default=90, description="Lifetime of API tokens created at login.")
    log_level: str = Field(default="INFO", description="Log level of every process.")

    @property
    def url(self) -> str:
        """Base URL of the web app."""
        return self.public_url or f"http://{self.web_host}:{self.web_port}"

    @property
    def predict_url(self) -> str:
        """Base URL of the prediction server."""
        return self.serving_url or f"http://{self.serving_host}:{self.serving_port}"

    def child_env(self) -> dict[str, str]:
        """These settings as ``OFFICINA_*`` variables, for child processes."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[f"OFFICINA_{name.upper()}"] = str(value)
        return env


def load_local_secrets(home: Path) -> dict[str, str]:
    """Secrets generated once per installation and kept in ``<home>/secrets.json`` (mode 0600).

    Holds the session signing key and the embedded S3 server's keys; created on first use.
    """
    import json
    import os
    import secrets

    home.mkdir(parents=True, exist_ok=True)
    path = home / "secrets.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        pass
    values = {
        "secret_key": secrets.token_urlsafe(32),
        "s3_access_key": "officina" + secrets.token_hex(6),
        "s3_secret_key": secrets.token_urlsafe(30),
    }
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    try:
        os.link(tmp, path)  # atomic and refuses to replace one written concurrently
    except FileExistsError:
        pass
    tmp.unlink(missing_ok=True)
    return json.loads(path.read_text())


def with_secrets(settings: Settings) -> Settings:
    """Fill the session key from the data dir's generated secrets where it is unset."""
    if settings.secret_key is not None:
        return settings
    generated = load_local_secrets(settings.home)
    return settings.model_copy(update={"secret_key": SecretStr(generated["secret_key"])})
