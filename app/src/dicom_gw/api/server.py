"""`dicom-gw api`: the API under gunicorn with uvicorn workers (several processes, one port)."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from dicom_gw.config import Settings


def _die_with_master(server: Any, worker: Any) -> None:
    from dicom_gw.supervisor import _die_with_parent

    _die_with_parent()


class ApiServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        api = self.settings.api
        bind = f"unix:{api.socket}" if api.socket else f"{api.bind_address}:{api.port}"
        options: dict[str, Any] = {
            "bind": [bind],
            "workers": api.workers,
            "worker_class": "uvicorn_worker.UvicornWorker",
            "timeout": 120,  # SSE streams send heartbeats well within this
            "graceful_timeout": 20,
            "accesslog": None,  # the app logs each request itself, without query strings
            "errorlog": "-",
            "proc_name": "dicom-gw-api",
            "umask": 0o007,
            # A worker must not outlive a killed master and keep the port from its successor.
            "post_fork": _die_with_master,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from dicom_gw.api.app import create_app

        return create_app(self.settings)
