"""`flopwise run`: drive the campaign engine with the local executor until the campaign ends.

The loop is the operator's, minus Kubernetes: observe the runs, let the engine decide, persist the status,
then launch. Killing it at any point loses nothing: `--resume` reloads the status and adopts runs that are
still alive or finished meanwhile.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from flopwise.api.load import CampaignError
from flopwise.api.spec import TrainingCampaign
from flopwise.api.status import LIVE_STATES, RunRecord, TrainingCampaignStatus
from flopwise.contract import RunProgress, RunSpec
from flopwise.engine.machine import campaign_seed, reconcile
from flopwise.engine.runspec import run_spec_for
from flopwise.executors.local import LocalExecutor
from flopwise.local.state import StateDir

POLL_SECONDS = 0.5
STOP_TIMEOUT_S = 120.0  # a trainer stops at its next step boundary: long enough for a slow step and a checkpoint


def check_dataset(campaign: TrainingCampaign, base: Path) -> Path:
    """The dataset must exist before any budget is reserved: a bad path is the user's to fix, now."""
    from flopwise.data import open_dataset

    path = Path(campaign.spec.dataset.path)
    path = path if path.is_absolute() else (base / path)
    try:
        dataset = open_dataset(path)
    except (OSError, ValueError) as error:
        raise CampaignError([f"spec.dataset.path: {error}; prepare one with `flopwise data stdlib {path}` or "
                             "point the path at a folder of token shards"]) from None
    if dataset.vocab_size > campaign.spec.model.vocab_size:
        raise CampaignError([f"spec.model.vocabSize: {campaign.spec.model.vocab_size} is smaller than the dataset's "
                             f"vocabulary ({dataset.vocab_size}); raise it"])
    return path.resolve()


class LocalCampaign:
    def __init__(self, campaign: TrainingCampaign, state_dir: Path, *, data_path: Path,
                 threads_per_run: int | None = None, device: str = "auto", env: dict[str, str] | None = None):
        self.campaign = campaign
        self.state = StateDir(state_dir)
        self.data_path = data_path
        self.device = device
        parallel = campaign.spec.gpu_pool.max_concurrent_runs
        threads = threads_per_run or max(1, (os.cpu_count() or 1) // parallel)
        self.executor = LocalExecutor(state_dir, threads_per_run=threads, env=env)

    def load_or_new(self, resume: bool) -> TrainingCampaignStatus | None:
        if self.state.exists():
            if not resume:
                raise CampaignError([f"{self.state.root}: a campaign state is already there; add --resume to "
                                     "continue it, or choose another --state-dir"])
            status = self.state.load()
            self.state.save_campaign(self.campaign)
            return status
        self.state.save_campaign(self.campaign)
        return None

    def step(self, status: TrainingCampaignStatus | None) -> TrainingCampaignStatus:
        observations = self.executor.observe(status.runs) if status else []
        decision = reconcile(self.campaign.spec, status, observations, now=time.time(),
                             seed=campaign_seed(self.campaign.metadata.name))
        self.state.save(decision.status)  # persist before launching: a crash here relaunches nothing twice
        self.state.log_events(decision.events)
        for record in decision.launches:
            self.executor.launch(record, self._run_spec(record, decision.status))
        for run_id in decision.cancels:
            self.executor.cancel(run_id)
        for run_id in decision.suspends:
            self.executor.suspend(run_id)
        for record in decision.resumes:
            self.executor.resume(record, self._run_spec(record, decision.status))
        return decision.status

    def _run_spec(self, record: RunRecord, status: TrainingCampaignStatus) -> RunSpec:
        assert status.plan is not None
        return run_spec_for(record, self.campaign.spec, status.plan, campaign=self.campaign.metadata.name,
                            data_path=str(self.data_path), output_dir=str(self.executor.output_dir(record.run_id)),
                            device=self.device)

    def run(self, status: TrainingCampaignStatus | None,
            on_update: Callable[[TrainingCampaignStatus], None] | None = None,
            stop: threading.Event | None = None) -> TrainingCampaignStatus:
        """Step the campaign until it ends (or is suspended), or until ``stop`` is set (between steps: never
        mid-launch); then ``interrupt`` stops the runs still going."""
        while True:
            status = self.step(status)
            if on_update is not None:
                on_update(status)
            live = any(r.state in LIVE_STATES for r in status.runs)
            if status.phase in ("Succeeded", "Failed") and not live:
                return status
            if self.campaign.spec.suspend and not any(r.state == "Running" for r in status.runs) and \
                    not any(self.executor.alive(r.run_id) for r in status.runs if r.state == "Suspended"):
                return status  # suspended: its runs stopped with their checkpoints; `suspend: false` + --resume
            self.executor.wait_any(POLL_SECONDS, stop)
            if stop is not None and stop.is_set():
                return status

    def progress(self, status: TrainingCampaignStatus) -> dict[str, RunProgress]:
        """What the running trainers last reported, by run id (for people watching, never for decisions)."""
        found = {r.run_id: self.executor.progress(r.run_id) for r in status.runs if r.state == "Running"}
        return {run_id: p for run_id, p in found.items() if p is not None}

    def interrupt(self, status: TrainingCampaignStatus, timeout: float = STOP_TIMEOUT_S) -> tuple[list[str], list[str]]:
        """Stop the running trainers (SIGTERM: each checkpoints and exits); returns (stopped, still alive). The
        status keeps them Running: `--resume` continues each one from its checkpoint."""
        running = [r.run_id for r in status.runs if r.state == "Running"]
        self.state.log_events([("Interrupted", f"stopping {len(running)} runs on request: {', '.join(running)}")])
        alive = self.executor.stop(running, timeout)
        return [run_id for run_id in running if run_id not in alive], alive
