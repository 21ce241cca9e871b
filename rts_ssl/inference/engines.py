"""Where per-scene work runs: one after another in this process (``engine=local``), or one
Ray task per scene on this machine or a cluster (``engine=ray``, options in ``conf/ray/``).

Both engines run the same function on the same scene and yield its result, or the
``InputError`` that made the scene fail, so callers report and skip a bad scene alike. Ray
workers read their scene and write its outputs themselves: only the (small) prediction
setup and the results travel through Ray's object store, never rasters.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from tqdm import tqdm

from rts_ssl.errors import InputError

if TYPE_CHECKING:  # the prediction modules run their work on these engines
    from rts_ssl.inference.predict import Prediction

log = logging.getLogger(__name__)
ENGINES = ("local", "ray")
Item = TypeVar("Item")


def map_scenes(work: Callable[[Any, Prediction], Any], items: Sequence[Item],
               prediction: Prediction, engine: str = "local",
               ray_options: Mapping | None = None,
               desc: str = "scenes") -> Iterator[tuple[Item, Any]]:
    """``work(item, prediction)`` for each item (a scene, or a scene and its reference),
    with one progress bar; yields ``(item, result or InputError)`` as scenes finish.

    ``work`` must be a module-level function (Ray sends it to its workers by reference)."""
    if engine not in ENGINES:
        raise InputError("engine", f"unknown engine {engine!r}: one of {', '.join(ENGINES)}")
    if not items:
        return
    options = dict(ray_options or {})
    with ray_session(options) if engine == "ray" else nullcontext():  # joined before the bar
        outcomes = (_ray_map(work, items, prediction, options) if engine == "ray" else
                    ((item, _attempt(work, item, prediction)) for item in items))
        yield from tqdm(outcomes, total=len(items), desc=desc, unit="scene")


def _attempt(work: Callable, item, prediction: Prediction):
    try:
        return work(item, prediction)
    except InputError as err:
        return err


def _ray_map(work: Callable, items: Sequence, prediction: Prediction,
             options: dict) -> Iterator[tuple[Any, Any]]:
    """Inside :func:`ray_session`: one task per item, outcomes as tasks finish."""
    import ray

    retries = options.get("max_retries", 2)
    task = ray.remote(_ray_task).options(
        num_cpus=options.get("num_cpus", 1), num_gpus=options.get("num_gpus", 0),
        max_retries=retries, retry_exceptions=False)
    shared = ray.put(prediction)  # into the object store once, not once per scene
    threads = int(options.get("torch_threads") or 1)
    pending = {task.remote(work, item, shared, threads): item for item in items}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        item = pending.pop(ready[0])
        try:
            yield item, ray.get(ready[0])
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.TaskUnschedulableError) as err:
            yield item, InputError(_name(item), f"its Ray worker died ({type(err).__name__}, "
                                   f"attempts: {retries + 1}); skipped")


def _ray_task(work: Callable, item, prediction: Prediction, threads: int):
    """One scene in a Ray worker: the worker's own torch threads and device."""
    import ray

    torch.set_num_threads(threads)
    if ray.get_gpu_ids():
        prediction = prediction.on_device("cuda")
    return _attempt(work, item, prediction)


@contextmanager
def ray_session(options: Mapping) -> Iterator[None]:
    """Ray for the duration of a command: joins ``address`` (``auto``, ``ray://host:port``)
    or starts a local Ray with ``local_cpus`` CPUs (null: all), stopped at the end."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network at run time
    # Ray starts its workers at niceness 15, where any other busy process starves them;
    # here the workers are the job (the driver only waits), so they run at normal priority
    os.environ.setdefault("RAY_worker_niceness", "0")
    started = not ray.is_initialized()
    if started:
        address = options.get("address")
        local = {"num_cpus": options.get("local_cpus"), "include_dashboard": False}
        try:
            ray.init(address=address, logging_level=logging.WARNING,
                     **({} if address else local))
        except ConnectionError as err:
            raise InputError(f"ray.address={address}", f"no Ray cluster there ({err})") from None
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _name(item) -> str:
    first = item[0] if isinstance(item, tuple) else item
    return getattr(first, "name", str(first))
