"""Whose loss is a predicted loss? A published law's losses are nats per token of *its* tokenizer on *its* data.

Chinchilla's law (and Epoch's refit of the same points) was fitted to models trained on MassiveText with a
32,000-token SentencePiece vocabulary. Evaluated for a byte-level model on Python source it returns a number
(12.1 for the quickstart) that means nothing for that campaign. Its *allocation* (how to split compute between
parameters and tokens) transfers far better than its loss, which is why it plans; its loss is shown only where
the campaign's tokenizer is the law's (same vocabulary size: the corpus cannot be checked, so even then it is
labelled as the prior's), and the campaign's own fit replaces it as soon as there is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LossBasis = Literal["fit", "prior"]


@dataclass(frozen=True)
class LawData:
    """What a published law was fitted on."""

    corpus: str
    tokenizer: str
    vocab_size: int

    def describe(self) -> str:
        return f"{self.corpus}, {self.tokenizer} with a {self.vocab_size:,}-token vocabulary"


_CHINCHILLA = LawData(corpus="MassiveText", tokenizer="SentencePiece", vocab_size=32_000)
PUBLISHED_DATA: dict[str, LawData] = {
    "chinchilla-3": _CHINCHILLA, "chinchilla-3-rounded": _CHINCHILLA, "chinchilla-1": _CHINCHILLA,
    "chinchilla-2": _CHINCHILLA, "epoch": _CHINCHILLA,  # Epoch AI refitted Chinchilla's own points
}


def loss_basis(law_name: str, vocab_size: int) -> LossBasis | None:
    """'fit' for a campaign's own law, 'prior' for a published law whose tokenizer matches the campaign's (its
    loss is comparable, labelled as the prior's), None when its loss says nothing about this campaign."""
    data = PUBLISHED_DATA.get(law_name)
    if data is None:
        return "fit"
    return "prior" if data.vocab_size == vocab_size else None


def why_no_prior_loss(law_name: str, vocab_size: int) -> str:
    """One sentence: why a published law's loss is not shown for this campaign."""
    data = PUBLISHED_DATA.get(law_name)
    if data is None:
        return ""
    return (f"{law_name}'s loss is per token of {data.describe()}; this campaign's vocabulary has {vocab_size:,} "
            "tokens, so that loss says nothing here")
