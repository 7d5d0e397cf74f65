"""Prefect deployment steps of mmindex (named in ``deploy/prefect.yaml``).

``check_installed`` is the deployments' pull step. The flows run from the installed package
(module-path entrypoints), so a worker needs no code folder: without an explicit pull step,
``prefect deploy`` would record the deploying checkout's directory and every worker would ``cd``
into it (and crash where it does not exist). This step changes no directory; it fails the run
with one clear line when the worker's environment lacks mmindex's flows.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version


def check_installed(module: str = "mmindex.flows.ingest") -> dict[str, str]:
    """Import ``module`` on the worker; return the installed mmindex version (the step's output)."""
    try:
        importlib.import_module(module)
        installed = version("mmindex")
    except (ImportError, PackageNotFoundError) as exc:
        raise RuntimeError(f"mmindex is not installed on this worker ({exc}): pip install 'mmindex[flows]'") from exc
    return {"mmindex_version": installed}
