"""`medseg doctor`: diagnose a finished run and rank what to change.

One module per family of checks (data, sampling, optimisation, generalisation, metrics,
errors); each reads a `RunEvidence` and returns `Finding`s, which `diagnose` ranks. Showing
them is the command's business (`medseg.commands.console`).
"""

from medseg.doctor.diagnose import diagnose, examine, serious, verdict
from medseg.doctor.finding import Finding, rank

__all__ = ["Finding", "diagnose", "examine", "rank", "serious", "verdict"]
