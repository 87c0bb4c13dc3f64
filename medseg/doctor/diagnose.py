"""`diagnose(run_dir)`: read the run, optionally re-run the checkpoint, run every family of checks, rank."""

from __future__ import annotations

from pathlib import Path

from medseg.doctor import data, errors, generalisation, metrics, optimisation, sampling
from medseg.doctor.evidence import RunEvidence, gather_eval, load_evidence
from medseg.doctor.finding import Finding, rank
from medseg.errors import MedsegError

FAMILY_CHECKS = (data.check, sampling.check, optimisation.check, generalisation.check, metrics.check, errors.check)

# What the re-run adds; listed when it is skipped so the reader knows what was not checked.
EVAL_ONLY = "duplicate images across the split, per-split intensity, the threshold sweep, Dice of found lesions"


def examine(run_dir: Path, evaluate: bool = True, loaded=None) -> tuple[RunEvidence, list[Finding]]:
    """The evidence and the ranked findings (see `diagnose`)."""
    ev = load_evidence(run_dir)
    if ev.config_error:
        ev.notes.append(f"saved config does not validate ({ev.config_error}); checked section by section")
    if evaluate:
        try:
            ev.eval = gather_eval(ev, loaded)
        except MedsegError as e:
            ev.eval_error = str(e)
        except Exception as e:  # noqa: BLE001 - a broken checkpoint or dataset is itself a diagnosis; the file checks still run
            ev.eval_error = f"{type(e).__name__}: {e}"
        if ev.eval_error:
            ev.notes.append(f"checkpoint not re-run ({ev.eval_error}); not checked: {EVAL_ONLY}")
    else:
        ev.notes.append(f"evaluation off (--no-eval): not checked: {EVAL_ONLY}")
    findings: list[Finding] = []
    for check in FAMILY_CHECKS:
        findings.extend(check(ev))
    return ev, rank(findings)


def diagnose(run_dir: Path, evaluate: bool = True, loaded=None) -> list[Finding]:
    """Ranked findings for a run folder: serious first, then by confidence x impact.

    Args:
        run_dir: the run folder (config.yaml, fingerprint.json, metrics/, checkpoints/).
        evaluate: also reload the data and run the model checkpoint on the validation images
            (duplicates, split intensity, threshold sweep, lesion-level errors); without it only
            the run's files are read.
        loaded: the run's data already in memory (`medseg.data.load_data` result), to skip reloading it.
    """
    return examine(run_dir, evaluate, loaded)[1]


def serious(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "serious"]


def verdict(findings: list[Finding]) -> str:
    """One line: how many serious findings, or that there are none."""
    n = len(serious(findings))
    if n == 0:
        return "no serious findings" + (f" ({len(findings)} warning/info)" if findings else "")
    return f"{n} serious finding{'s' if n > 1 else ''}; the first is the most likely cause"
