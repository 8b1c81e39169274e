"""The TrainingCampaign API: pydantic models (the single truth), CRD generation and file loading."""

from flopwise.api.spec import GROUP, KIND, PLURAL, VERSION, TrainingCampaign, TrainingCampaignSpec
from flopwise.api.status import Plan, TrainingCampaignStatus

__all__ = ["GROUP", "KIND", "PLURAL", "VERSION", "Plan", "TrainingCampaign", "TrainingCampaignSpec",
           "TrainingCampaignStatus"]
