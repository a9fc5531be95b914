"""The service's read model: the standard projections, built together in their apply order."""

from __future__ import annotations

from dataclasses import dataclass, field

from projections.jobs import JobTable
from projections.leads import LeadTable
from projections.listings import JobListings
from projections.runner import Projection
from projections.usage import UsageTable

READ_MODEL_CHECKPOINT = "read-model.ckpt"
"""The read model's checkpoint file, in the data directory's `projections/` folder."""


@dataclass(eq=True, frozen=True, slots=True)
class ReadModel:
    """Jobs, listings, usage and leads; equal when every projection's state is equal."""

    jobs: JobTable = field(default_factory=JobTable)
    usage: UsageTable = field(default_factory=UsageTable)
    leads: LeadTable = field(default_factory=LeadTable)
    listings: JobListings = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "listings", JobListings(self.jobs))

    @property
    def projections(self) -> tuple[Projection, ...]:
        """Every projection, for a `ProjectionRunner` or `fold_as_of`."""
        return (self.jobs, self.listings, self.usage, self.leads)
