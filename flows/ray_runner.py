"""Run a recipe's shard tasks on Ray: `flow run <recipe> --runner ray [--ray-address HOST:PORT]`.

prefect-ray's `RayTaskRunner` sends each shard task to a Ray worker process. Without an address it
starts a local Ray instance with `--workers` CPUs for the run (listening on 127.0.0.1 only) and stops
it afterwards; with one it joins that cluster (`auto`: the one `ray start` made on this machine).

What a worker needs, and how it gets it:
- the code: thinkmill importable by the workers' Python (the same venv, or installed on every node);
- the Prefect API, to report its task runs: with no PREFECT_API_URL set, the driver starts Prefect's
  temporary server itself and hands its URL to the workers (127.0.0.1: fine on one machine; a
  cluster of several machines needs PREFECT_API_URL set to a server every node reaches);
- the files: a worker reads media and writes its shard's Parquet files under the dataset folder, and
  the driver commits them, so on several machines THINKMILL_HOME must be a shared mount;
- the environment: the driver's THINKMILL_*, HF_* and TRANSFORMERS_* variables (Ray's runtime_env).

What is not sent: loaded models (the EngineRegistry drops them when pickled, so each worker loads
its own once and keeps it for its later shards), and the live progress bars (with Ray a stage's bar
moves as shards finish). Results are the same as with threads: a shard's output depends only on
its inputs, and the driver assembles and commits the shards in order.
"""

import os
from contextlib import contextmanager

from schemas.errors import ThinkmillError

PASSED_TO_WORKERS = ("THINKMILL_", "HF_", "TRANSFORMERS_", "TOKENIZERS_PARALLELISM", "PREFECT_LOGGING_LEVEL")


@contextmanager
def ray_task_runner(*, workers: int, address: str | None):
    """A RayTaskRunner for one run, with a Prefect API the workers can reach."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports from a closed network
    if address is None:
        # Before Ray is imported: a local instance then binds to 127.0.0.1, not to the machine's address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise ThinkmillError("--runner ray needs Ray and prefect-ray, which are not installed. "
                             "Install them with: pip install 'thinkmill[ray]'") from None
    init_kwargs = {"runtime_env": {"env_vars": worker_environment()}, "log_to_driver": False}
    if address is None:
        init_kwargs |= {"num_cpus": workers, "include_dashboard": False}
    with prefect_api_for_workers():
        yield RayTaskRunner(address=address, init_kwargs=init_kwargs)


def worker_environment() -> dict[str, str]:
    """The variables of this process that shard code reads (model and dataset locations, offline flags)."""
    return {name: value for name, value in os.environ.items() if name.startswith(PASSED_TO_WORKERS)}


@contextmanager
def prefect_api_for_workers():
    """Make sure the run has a Prefect API URL that worker processes can use.

    Prefect's ephemeral mode serves its API inside the flow's process, out of the workers' reach (each
    would start a server of its own). So the driver starts the temporary server itself and sets its
    URL for the run; the workers receive it with the task's serialized settings.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield
    finally:
        server.stop()
