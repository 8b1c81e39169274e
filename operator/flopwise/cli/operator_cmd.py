"""`flopwise operator`: run the TrainingCampaign operator (kopf, in-process) against the current kubeconfig.

It drives the same engine as `flopwise run`, with Kubernetes Jobs as the runs. kopf and the Kubernetes client
are imported only when the command runs (they belong to the operator image).
"""

from __future__ import annotations

import contextlib
import logging

import click


@click.command("operator")
@click.option("--namespace", "-n", "namespaces", multiple=True,
              help="watch this namespace (repeatable; glob patterns allowed)")
@click.option("--all-namespaces", "-A", "all_namespaces", is_flag=True, help="watch every namespace")
@click.option("--liveness", "liveness", default=None, metavar="URL",
              help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz")
@click.option("--metrics-address", default="0.0.0.0", show_default=True,
              help="address the Prometheus metrics server listens on")
@click.option("--metrics-port", type=click.IntRange(min=0, max=65535), default=0, show_default=True,
              help="port of the Prometheus metrics server (0: no metrics server)")
@click.option("--kubeconfig", default=None, type=click.Path(dir_okay=False),
              help="kubeconfig file (default: in-cluster, else $KUBECONFIG or ~/.kube/config)")
@click.option("--bootstrap-resamples", type=click.IntRange(min=0), default=200, show_default=True,
              help="bootstrap resamples of the final fit (its confidence interval)")
@click.option("--fit-grid", type=click.Choice(["hoffmann", "coarse"]), default="hoffmann", show_default=True,
              help="start grid of the fit: Hoffmann's 4500 starts, or a coarse one for small machines")
@click.option("--leader-election", is_flag=True,
              help="elect one acting replica through a coordination.k8s.io Lease (run several for fail-over)")
@click.option("--leader-election-namespace", default=None, metavar="NS",
              help="namespace of the Lease (default: $POD_NAMESPACE, else the first --namespace)")
@click.option("--leader-election-name", default="flopwise-operator", show_default=True, metavar="NAME",
              help="name of the Lease")
@click.option("--workers", type=click.IntRange(min=1, max=64), default=8, show_default=True,
              help="reconcile threads (one campaign is never reconciled by two at once); as many again serve "
                   "only new campaigns' first passes")
@click.option("--fit-workers", type=click.IntRange(min=0, max=64), default=None,
              help="processes that fit scaling laws off the reconcile threads (default: the CPUs, at most 4; "
                   "0: fit inline)")
@click.option("--verbose", "-v", is_flag=True)
def command(namespaces: tuple[str, ...], all_namespaces: bool, liveness: str | None, metrics_address: str,
            metrics_port: int, kubeconfig: str | None,
            bootstrap_resamples: int, fit_grid: str, leader_election: bool, leader_election_namespace: str | None,
            leader_election_name: str, workers: int, fit_workers: int | None, verbose: bool) -> None:
    """Run the TrainingCampaign operator until interrupted."""
    if bool(namespaces) == all_namespaces:
        raise click.UsageError("give --namespace NS (one or more) or --all-namespaces")
    _fewer_malloc_arenas()
    import kopf

    from flopwise.engine.machine import EngineOptions
    from flopwise.fitting.fit import COARSE_GRID, HOFFMANN_GRID
    from flopwise.kube import handlers

    handlers.SETTINGS.options = EngineOptions(bootstrap_resamples=bootstrap_resamples,
                                              fit_grid=COARSE_GRID if fit_grid == "coarse" else HOFFMANN_GRID)
    handlers.SETTINGS.kubeconfig = kubeconfig
    handlers.SETTINGS.workers = workers
    if fit_workers is None:
        import os

        fit_workers = max(1, min(4, len(os.sched_getaffinity(0))))
    handlers.SETTINGS.fit_workers = fit_workers
    if leader_election:
        import os

        lease_namespace = leader_election_namespace or os.environ.get("POD_NAMESPACE") or (
            namespaces[0] if namespaces and not any(c in namespaces[0] for c in "*?!,") else None)
        if not lease_namespace:
            raise click.UsageError("--leader-election needs --leader-election-namespace (or $POD_NAMESPACE)")
        handlers.SETTINGS.leader_election = (lease_namespace, leader_election_name)
    # Plain namespace names need no cluster-wide scanning of namespaces and CRDs (nor its RBAC); patterns do.
    handlers.SETTINGS.scanning = all_namespaces or any(c in ns for ns in namespaces for c in "*?!,")
    if kubeconfig:
        import os

        os.environ["KUBECONFIG"] = kubeconfig  # kopf's own login reads it too
    kopf.configure(verbose=verbose)
    logging.getLogger("flopwise").setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:  # kopf logs every handler call at INFO: keep its warnings, and flopwise's own lines
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if metrics_port:
        from flopwise.kube import metrics

        metrics.start_server(metrics_address, metrics_port)
    _collect_less()
    kopf.run(standalone=True, clusterwide=all_namespaces, namespaces=list(namespaces),
             liveness_endpoint=liveness)


MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # glibc's mallopt parameter


def _fewer_malloc_arenas() -> None:
    """glibc gives each thread that allocates its own arena, up to 8 per core; the operator's dozen threads
    (reconcile workers, Event posters, kopf, the metrics server) each parse and drop statuses of tens of KB, and
    memory freed in one arena is never reused by another, so peak RSS creeps up with the thread count. Two arenas
    is the usual cure (as MALLOC_ARENA_MAX=2), set here, before any thread starts, so every way of running the
    operator (the image, the chart, the benchmark) gets it. Not glibc: nothing to do."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).mallopt(M_ARENA_MAX, MALLOC_ARENAS)


GC_THRESHOLDS = (5000, 20, 50)  # Python's defaults are (700, 10, 10)


def _collect_less() -> None:
    """Python's cyclic collector stops every thread while it runs, and a full (oldest-generation) collection walks
    every live container: in a burst of 100 applies the operator spent 2.6 s of 25 in it, in full collections of
    0.12-0.17 s each (kopf's event loop, every reconcile and every status parse held up), although parsed statuses
    are freed by reference counting and make no cycles. So what the imports made is frozen out of every collection
    (gc.freeze: modules, schemas, the API client's models), and collections run less often: 1.0 s of 25 in the same
    burst, with the same peak RSS."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


if __name__ == "__main__":
    command()
