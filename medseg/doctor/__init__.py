"""`medseg doctor`: diagnose a finished run and rank what to change.

One module per family of checks (data, sampling, optimisation, generalisation, metrics,
errors); each reads a `RunEvidence` and returns `Finding`s, which `diagnose` ranks.
"""

from medseg.doctor.diagnose import diagnose, examine, serious, verdict
from medseg.doctor.finding import Finding, rank
from medseg.doctor.render import print_findings, write_findings_json

__all__ = ["Finding", "diagnose", "examine", "print_findings", "rank", "serious", "verdict", "write_findings_json"]
