"""Prefect deployment steps of mmindex (named in ``deploy/prefect.yaml``).

``check_installed`` is the deployments' pull step. The flows run from the installed package
(module-path entrypoints), so a worker needs no code folder: without an explicit pull step,
``prefect deploy`` would record the deploying checkout's directory and every worker would ``cd``
into it (and crash where it does not exist). This step changes no directory; it fails the run
with one clear line when the worker's environment lacks mmindex's flows.

The step runs in the process worker's supervisor process, once per flow run, before that process
starts the flow's own process (which imports the flow module itself). So the step only *finds* the
module (``importlib.util.find_spec``: the file is located, not executed) and the installed
distribution: importing ``mmindex.flows.ingest`` here cost every shard run a second import of it
(about 1-2 s on a loaded 2-core machine, ``benchmarks/flow_overhead.py``).
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import PackageNotFoundError, version


def check_installed(module: str = "mmindex.flows.ingest") -> dict[str, str]:
    """Find ``module`` on the worker without running it; return the installed mmindex version."""
    try:
        found = importlib.util.find_spec(module)
        installed = version("mmindex")
    except (ImportError, PackageNotFoundError) as exc:  # a missing parent package raises here
        raise RuntimeError(f"mmindex is not installed on this worker ({exc}): pip install 'mmindex[flows]'") from exc
    if found is None:
        raise RuntimeError(f"mmindex is not installed on this worker (no module {module}): "
                           "pip install 'mmindex[flows]'")
    return {"mmindex_version": installed}
