"""The local campaign's state directory: the status (its only memory), the campaign it runs, an event log.

The status is written atomically (temp file, fsync, rename) before any launch, so a `kill -9` at any moment
leaves either the old or the new status, never a torn one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import yaml

from flopwise.api.spec import TrainingCampaign
from flopwise.api.status import TrainingCampaignStatus


class StateDir:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.status_path = self.root / "status.json"
        self.campaign_path = self.root / "campaign.yaml"
        self.events_path = self.root / "events.log"

    def exists(self) -> bool:
        return self.status_path.exists()

    def load(self) -> TrainingCampaignStatus:
        return TrainingCampaignStatus.model_validate_json(self.status_path.read_text())

    def save(self, status: TrainingCampaignStatus) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        text = status.model_dump_json(by_alias=True, exclude_none=True, indent=1)
        tmp = self.status_path.with_suffix(".json.tmp")
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.status_path)

    def save_campaign(self, campaign: TrainingCampaign) -> None:
        """The campaign as run (`flopwise status` and `flopwise report` read it; the status alone has no spec)."""
        self.root.mkdir(parents=True, exist_ok=True)
        document = campaign.model_dump(mode="json", by_alias=True, exclude_none=True)
        tmp = self.campaign_path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(document, sort_keys=False))
        os.replace(tmp, self.campaign_path)

    def load_campaign(self) -> TrainingCampaign | None:
        """The campaign saved beside the status, or None (a state folder from before it was saved)."""
        if not self.campaign_path.exists():
            return None
        from flopwise.api.load import load_campaign

        return load_campaign(self.campaign_path)

    def log_events(self, events: list[tuple[str, str]]) -> None:
        if not events:
            return
        with open(self.events_path, "a") as handle:
            for reason, message in events:
                handle.write(json.dumps({"time": round(time.time(), 3), "reason": reason, "message": message}) + "\n")
