"""Post-processing of probability maps, and its tuning on the validation cases (`medseg tune`).

A segmentation network trained on images that are mostly empty or hold one small lesion
leaves specks: a few pixels above 0.5 on a normal image turn a perfect empty/empty case
(Dice 1 under `empty: one`) into Dice 0. The SIIM-ACR winners removed small predictions
and tuned the threshold on validation; nnU-Net chooses "keep the largest component" by
cross-validation. medseg does both in one search, on validation only:

* ``threshold``: pixel threshold on the probability map;
* ``min_area``: connected components (full connectivity, as the lesion metrics count them)
  smaller than this many pixels (voxels for volumes) at network input size are removed;
* ``keep_largest``: keep only the largest component of each case;
* ``min_score``: the case is predicted empty unless its highest probability reaches this
  (the SIIM-ACR winners' "top threshold"): a lesion-sized false alarm on a normal image is
  often a broad, lukewarm blob that no area rule removes, while real lesions peak near 1;
* ``tta``: the rule reads probabilities averaged with the horizontally flipped prediction.

The winner must beat the raw prediction (the contract's threshold, nothing removed) by at
least ``postprocess.min_gain`` in the contract's Dice, else the raw prediction is kept: a
few validation images should not move the pipeline for noise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from medseg.data.tta import DIHEDRAL, FLIP
from medseg.metrics.contract import MetricContract
from medseg.metrics.overlap import overlap_scores
from medseg.metrics.sweep import sweep_cases
from medseg.metrics.validation import dice_from_counts


@dataclass(frozen=True)
class PostProcess:
    """How a probability map becomes the final mask.

    Attributes:
        threshold: foreground where prob >= threshold.
        min_area: remove connected components with fewer pixels (voxels); 0 keeps all.
        keep_largest: keep only the largest component.
        min_score: predict the case empty unless its maximum probability is >= this (0 = off).
        tta: the test-time augmentation the probabilities come from: transform names of
            `inference.DIHEDRAL` (e.g. ('identity', 'hflip')), () for none; read by the
            callers that produce the probabilities (`apply` only sees the map).
    """

    threshold: float = 0.5
    min_area: int = 0
    keep_largest: bool = False
    min_score: float = 0.0
    tta: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "tta", normalise_tta(self.tta))

    def apply(self, prob: np.ndarray, area_scale: float = 1.0) -> np.ndarray:
        """The final boolean mask of one case (2D image or 3D volume).

        Args:
            prob: probability map.
            area_scale: pixels of `prob` per pixel at network input size (a map resized back
                to the original image has (H*W)/(h*w)); scales `min_area`.
        """
        prob = np.asarray(prob, dtype=np.float64)
        if self.min_score > 0 and prob.size and float(prob.max()) < self.min_score:
            return np.zeros(prob.shape, dtype=bool)
        hard = prob >= self.threshold
        if (self.min_area <= 0 and not self.keep_largest) or not hard.any():
            return hard
        labels, sizes = _components(hard)
        keep = _kept_labels(sizes, int(round(self.min_area * area_scale)), self.keep_largest)
        return np.isin(labels, keep)

    def describe(self) -> str:
        parts = [f"threshold {self.threshold:g}"]
        if self.min_area > 0:
            parts.append(f"remove components < {self.min_area} px")
        if self.keep_largest:
            parts.append("keep the largest component")
        if self.min_score > 0:
            parts.append(f"empty unless max probability >= {self.min_score:g}")
        if self.tta:
            parts.append(describe_tta(self.tta))
        return ", ".join(parts)

    def to_json(self) -> dict:
        return {**asdict(self), "tta": list(self.tta)}

    @classmethod
    def from_json(cls, d: dict) -> "PostProcess":
        # min_score and tta are absent from rules tuned before they existed; tta was a flag before the dihedral sets
        return cls(threshold=float(d["threshold"]), min_area=int(d["min_area"]), keep_largest=bool(d["keep_largest"]),
                   min_score=float(d.get("min_score", 0.0)), tta=d.get("tta", False))


def normalise_tta(tta) -> tuple:
    """A rule's TTA as a tuple of transform names; () for none (also for ['identity'] alone)."""
    if tta is None or tta is False:
        return ()
    if tta is True:
        return FLIP  # the flip TTA of rules saved before the dihedral sets
    names = tuple(dict.fromkeys(str(t) for t in tta))
    return () if names in ((), ("identity",)) else names


def describe_tta(tta) -> str:
    names = normalise_tta(tta)
    if not names:
        return "no TTA"
    if names == FLIP:
        return "flip TTA"
    if set(names) == set(DIHEDRAL):
        return "dihedral TTA (8 transforms)"
    return f"TTA {'+'.join(names)}"


def _components(hard: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    structure = ndimage.generate_binary_structure(hard.ndim, hard.ndim)
    labels, n = ndimage.label(hard, structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    return labels, sizes


def _kept_labels(sizes: np.ndarray, min_area: int, keep_largest: bool) -> np.ndarray:
    ids = np.arange(len(sizes))
    keep = (sizes >= max(1, min_area)) & (ids > 0)
    if keep_largest and keep.any():
        largest = int(np.argmax(np.where(keep, sizes, -1)))
        keep = ids == largest
    return ids[keep]


def _case_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float, float, bool]:
    """(tp, fp, fn, tn, empty_empty) of one case."""
    tp = float(np.count_nonzero(pred & truth))
    fp = float(np.count_nonzero(pred & ~truth))
    fn = float(np.count_nonzero(~pred & truth))
    return tp, fp, fn, float(truth.size - tp - fp - fn), (not truth.any()) and (not pred.any())


def default_area_grid(case_shape: Sequence[int], fractions: Sequence[float]) -> list[int]:
    """Candidate `min_area` values: fractions of one 2D image (slice) area, rounded, unique."""
    plane = int(case_shape[-1]) * int(case_shape[-2])
    return sorted({int(round(f * plane)) for f in fractions})


class RuleSearch:
    """`tune_postprocess` case by case: `add` each case, then `result()`.

    Each case is scored under every candidate rule as it is added and only the contract's sums
    are kept (per rule and gate: the sum and number of finite per-case Dice values, or the pooled
    counts for a global contract), so memory does not grow with the validation set (LiTS: 6,060
    slices under 176 rules x 7 gates x 3 TTA sets) and no probabilities are held.

    Args:
        contract / thresholds / area_fractions / keep_largest / min_scores: as `tune_postprocess`.
    """

    def __init__(self, contract: MetricContract, thresholds: Sequence[float], area_fractions: Sequence[float],
                 keep_largest: Sequence[bool] = (False, True), min_scores: Sequence[float] = (0.0,)):
        self.contract = contract
        self.thresholds = sorted(set(float(t) for t in thresholds) | {float(contract.threshold)})
        self.area_fractions = list(area_fractions)
        self.keep_largest = list(keep_largest)
        self.gates = sorted({0.0} | {float(g) for g in min_scores})
        self.areas: Optional[list[int]] = None  # from the first case's plane, as fractions of one image
        self.n_cases = 0
        self._rules = self._plain = None

    def add(self, prob: np.ndarray, truth: np.ndarray, plain: Optional[np.ndarray] = None) -> None:
        """One case (2D image or 3D volume).

        Args:
            prob: its probability map (any float dtype: compared with each threshold in float64,
                without a float64 copy of the map).
            truth: its binary mask.
            plain: the plain (no TTA) probabilities when `prob` came from TTA: the raw baseline is
                the contract's threshold on these.
        """
        prob = np.asarray(prob)
        truth = np.asarray(truth).astype(bool)
        if self.areas is None:
            self.areas = default_area_grid(prob.shape, self.area_fractions)
            n_rules = len(self.thresholds) * len(self.keep_largest) * len(self.areas)
            self._rules = _ScoreSums(self.contract, (len(self.gates), n_rules))
            self._plain = _ScoreSums(self.contract, (1, 1))
        n_truth, n = int(np.count_nonzero(truth)), int(truth.size)
        per_threshold = len(self.keep_largest) * len(self.areas)
        counts = []
        for thr in self.thresholds:
            hard = prob >= np.float64(thr)
            if not hard.any():
                counts += [(0, 0)] * per_threshold
                continue
            # each component's size and its overlap with the truth, once: a rule keeps a set of components,
            # so its counts are sums over them (exact integers, no mask per candidate)
            labels, sizes = _components(hard)
            overlap = np.bincount(labels[truth], minlength=len(sizes))
            overlap[0] = 0
            for largest in self.keep_largest:
                for area in self.areas:
                    keep = _kept_labels(sizes, area, largest)
                    counts.append((int(overlap[keep].sum()), int(sizes[keep].sum())))
        tp, predicted = (np.array(c, dtype=np.float64) for c in zip(*counts))
        rule = np.stack([tp, predicted - tp, n_truth - tp, n - n_truth - (predicted - tp)], axis=1)
        ee = (n_truth == 0) & (predicted == 0)
        empty = np.array([0.0, 0.0, n_truth, n - n_truth])
        peak = float(np.max(prob)) if prob.size else 0.0
        for g, gate in enumerate(self.gates):
            if gate > 0 and peak < gate:  # a gated case is predicted empty under every rule
                self._rules.add(g, np.broadcast_to(empty, rule.shape), np.full(len(ee), n_truth == 0))
            else:
                self._rules.add(g, rule, ee)
        base = np.asarray(prob if plain is None else plain) >= np.float64(self.contract.threshold)
        tp, fp, fn, tn, ee_plain = _case_counts(base, truth)
        self._plain.add(0, np.array([[tp, fp, fn, tn]]), np.array([ee_plain]))
        self.n_cases += 1

    def _grid(self) -> tuple:
        return self.contract, self.thresholds, self.area_fractions, self.keep_largest, self.gates

    @classmethod
    def merged(cls, searches: Sequence["RuleSearch"]) -> "RuleSearch":
        """One search holding every case of these searches: what one search fed all their cases gives.

        The kept sums add up (per-case Dice sums and counts, pooled counts), so cases scored once
        serve any union of them: an experiment searches each fold once and merges the folds for
        the rule chosen on all of them and for each rule chosen without one. Floats agree with one
        search fed every case up to rounding (the per-case Dice values are added in another order).

        Args:
            searches: searches of one grid (contract, thresholds, area fractions, keep_largest,
                gates); those without cases are skipped.

        Raises:
            ValueError: no search given, or their grids differ.
        """
        searches = list(searches)
        if not searches:
            raise ValueError("no search to merge")
        first = searches[0]
        for s in searches:
            if s._grid() != first._grid():
                raise ValueError("searches of different grids (contract, thresholds, areas, keep_largest or gates) do not merge")
        out = cls(first.contract, first.thresholds, first.area_fractions, first.keep_largest, first.gates)
        fed = [s for s in searches if s.n_cases]
        if not fed:
            return out
        if any(s.areas != fed[0].areas for s in fed):
            raise ValueError("searches of different image (slice) sizes do not merge: their min_area grids differ")
        out.areas = fed[0].areas
        out._rules = _ScoreSums.merged([s._rules for s in fed])
        out._plain = _ScoreSums.merged([s._plain for s in fed])
        out.n_cases = sum(s.n_cases for s in fed)
        return out

    def result(self, min_gain: float = 0.005, tta=(), where: str = "validation") -> dict:
        """The search over every case added (see `tune_postprocess` for the fields)."""
        if not self.n_cases:
            raise ValueError("no cases to tune on")
        contract = self.contract
        dice, n_ee = self._rules.dice(), self._rules.n_empty_empty
        rows = []
        k = 0
        for thr in self.thresholds:
            for largest in self.keep_largest:
                for area in self.areas:
                    for g, gate in enumerate(self.gates):
                        rows.append({
                            "threshold": thr, "min_area": int(area), "keep_largest": bool(largest), "min_score": gate,
                            "dice": float(dice[g, k]), "n_empty_empty": int(n_ee[g, k]),
                        })
                    k += 1
        # the baseline: the contract's threshold on the plain probabilities, nothing removed
        raw = {"threshold": float(contract.threshold), "min_area": 0, "keep_largest": False, "min_score": 0.0,
               "dice": float(self._plain.dice()[0, 0]), "n_empty_empty": int(self._plain.n_empty_empty[0, 0])}

        def rank(r: dict) -> tuple:
            # best Dice; ties go to the simplest rule: contract threshold, smaller area, all components, no gate
            d = r["dice"] if math.isfinite(r["dice"]) else -math.inf
            return (round(d, 9), -abs(r["threshold"] - contract.threshold), -r["min_area"], not r["keep_largest"], -r["min_score"])

        def rule(r: dict) -> PostProcess:
            return PostProcess(r["threshold"], r["min_area"], r["keep_largest"], r["min_score"], tta)

        best = max(rows, key=rank)
        gain = best["dice"] - raw["dice"] if math.isfinite(best["dice"]) and math.isfinite(raw["dice"]) else 0.0
        n = self.n_cases
        what = f"on {n} {where} case{'s' if n != 1 else ''}"  # the rule's text already says which TTA
        if gain >= min_gain:
            chosen = rule(best)
            reason = f"{chosen.describe()}: Dice {best['dice']:.4f} vs {raw['dice']:.4f} raw {what} (+{gain:.4f})"
        else:
            chosen = PostProcess(float(contract.threshold), 0, False, 0.0, ())
            reason = f"raw prediction kept: the best rule ({rule(best).describe()}) gains only {gain:+.4f} < {min_gain:g} {what}"
        return {
            "chosen": chosen.to_json(), "raw": raw, "best": best, "gain": gain, "rows": rows,
            "n_cases": n, "min_gain": min_gain, "reason": reason,
        }


class _ScoreSums:
    """The contract's Dice of many candidates, accumulated case by case (what `dice_from_counts` gives for all cases).

    A global contract pools the counts (and needs every case empty/empty for the empty score);
    the others take the NaN-ignoring mean of per-case Dice, kept as a sum and a count.
    """

    def __init__(self, contract: MetricContract, shape: tuple[int, int]):
        self.contract, self.empty_score = contract, contract.empty_score()
        self.pooled = contract.reduction == "global"
        self.sums = np.zeros(shape + ((4,) if self.pooled else ()), dtype=np.float64)
        self.finite = np.zeros(shape, dtype=np.int64)
        self.all_empty = np.ones(shape, dtype=bool)
        self.n_empty_empty = np.zeros(shape, dtype=np.int64)

    def add(self, row: int, counts: np.ndarray, empty_empty: np.ndarray) -> None:
        """One case's (tp, fp, fn, tn) and empty/empty flag under each candidate of `row`."""
        self.n_empty_empty[row] += empty_empty
        if self.pooled:
            self.sums[row] += counts
            self.all_empty[row] &= empty_empty
            return
        d = np.asarray(overlap_scores(counts[:, 0], counts[:, 1], counts[:, 2], counts[:, 3], empty_empty,
                                      self.empty_score)["dice"], dtype=np.float64)
        ok = np.isfinite(d)
        self.sums[row] += np.where(ok, d, 0.0)
        self.finite[row] += ok

    @classmethod
    def merged(cls, parts: Sequence["_ScoreSums"]) -> "_ScoreSums":
        """The sums of the cases of all these (one contract, one shape): sums, counts and empty/empty tallies add, `all_empty` ANDs."""
        out = cls(parts[0].contract, parts[0].finite.shape)
        for p in parts:
            if p.contract != out.contract or p.finite.shape != out.finite.shape:
                raise ValueError("score sums of different contracts or candidates do not merge")
            out.sums += p.sums
            out.finite += p.finite
            out.all_empty &= p.all_empty
            out.n_empty_empty += p.n_empty_empty
        return out

    def dice(self) -> np.ndarray:
        if self.pooled:
            s = self.sums
            return np.asarray(overlap_scores(s[..., 0], s[..., 1], s[..., 2], s[..., 3], self.all_empty,
                                             self.empty_score)["dice"], dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.finite > 0, self.sums / np.maximum(self.finite, 1), math.nan)


def tune_postprocess(
    probs: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    contract: MetricContract,
    thresholds: Sequence[float],
    area_fractions: Sequence[float],
    keep_largest: Sequence[bool] = (False, True),
    min_gain: float = 0.005,
    min_scores: Sequence[float] = (0.0,),
    tta=(),
    raw_probs: Optional[Sequence[np.ndarray]] = None,
    where: str = "validation",
) -> dict:
    """Grid-search threshold x min_area x keep_largest x min_score for the contract's Dice.

    Args:
        probs / masks: per-case probability maps and binary truths (images, or volumes
            for a per-volume contract: pass `metrics.sweep_cases` output).
        contract: the run's metric contract (its reduction and empty policy are the objective).
        thresholds: candidate pixel thresholds.
        area_fractions: candidate min_area values as fractions of one image's area (0 = keep all).
        keep_largest: candidate values of keep_largest.
        min_scores: candidate case gates on the maximum probability (0 = off).
        tta: the TTA `probs` came from (transform names, or True for flip; recorded in the chosen rule).
        raw_probs: the plain (no TTA) probabilities when `probs` came from TTA: the raw
            baseline the rule must beat is then the contract's plain prediction.
        min_gain: the best must beat the raw prediction by this much, else raw is chosen.
        where: what the cases are, for the reason text ("validation", "out-of-fold").

    Returns:
        {"chosen": PostProcess as dict, "raw": {...,"dice"}, "best": {..., "dice"}, "gain", "rows": all candidates,
         "n_cases", "min_gain", "reason"}.
    """
    search = RuleSearch(contract, thresholds, area_fractions, keep_largest, min_scores)
    for i, (p, m) in enumerate(zip(probs, masks)):
        search.add(p, m, None if raw_probs is None else raw_probs[i])
    return search.result(min_gain, tta, where)


class TTARuleSearch:
    """`tune_over_tta` case by case: `add` a case's probabilities under every TTA set, then `result()`.

    Args:
        sets: the TTA sets (transform names); the first must be the plain prediction (('identity',)).
        (the rest as `RuleSearch`)
    """

    def __init__(self, sets: Sequence[Sequence[str]], contract: MetricContract, thresholds: Sequence[float],
                 area_fractions: Sequence[float], keep_largest: Sequence[bool] = (False, True),
                 min_scores: Sequence[float] = (0.0,)):
        self.sets = [tuple(s) for s in sets]
        self.searches = [RuleSearch(contract, thresholds, area_fractions, keep_largest, min_scores) for _ in self.sets]

    def add(self, probs: Sequence[np.ndarray], truth: np.ndarray) -> None:
        """One case: its probability map under each set (in `sets` order) and its binary mask."""
        if len(probs) != len(self.sets):
            raise ValueError(f"one probability map per TTA set: got {len(probs)} for {len(self.sets)} sets")
        for search, p in zip(self.searches, probs):
            search.add(p, truth, plain=probs[0])

    def add_chunk(self, probs_by_set: Sequence[np.ndarray], masks, meta: Optional[Sequence[dict]]) -> None:
        """Per-slice arrays of whole cases (every slice of a volume in the chunk), grouped as `sweep_cases` groups them.

        Args:
            probs_by_set: the chunk's (n, H, W) probabilities under each set, in `sets` order.
            masks: their (n, H, W) binary masks.
            meta: their per-sample meta (`volume`/`slice` for volume data).
        """
        contract = self.searches[0].contract
        by_set = [sweep_cases(p, masks, meta, contract) for p in probs_by_set]
        for j, truth in enumerate(by_set[0][1]):
            self.add([cases[j] for cases, _ in by_set], truth)

    @classmethod
    def merged(cls, searches: Sequence["TTARuleSearch"]) -> "TTARuleSearch":
        """One search holding every case of these (same sets, same grid): see `RuleSearch.merged`.

        Args:
            searches: the searches to merge; those without cases are skipped.

        Raises:
            ValueError: no search given, or their sets or grids differ.
        """
        searches = list(searches)
        if not searches:
            raise ValueError("no search to merge")
        sets = searches[0].sets
        if any(s.sets != sets for s in searches):
            raise ValueError("searches over different TTA sets do not merge")
        r = searches[0].searches[0]
        out = cls(sets, r.contract, r.thresholds, r.area_fractions, r.keep_largest, r.gates)
        out.searches = [RuleSearch.merged([s.searches[i] for s in searches]) for i in range(len(sets))]
        return out

    def result(self, min_gain: float = 0.005, where: str = "validation") -> dict:
        """`tune_postprocess`'s result for the set taken, plus "tta_sets" and "tta_reason" (see `tune_over_tta`)."""
        results = [(normalise_tta(names), s.result(min_gain, names, where)) for names, s in zip(self.sets, self.searches)]

        def best_dice(r: dict) -> float:
            return r["best"]["dice"] if math.isfinite(r["best"]["dice"]) else -math.inf

        top = max(best_dice(r) for _, r in results)
        names, chosen = min((x for x in results if best_dice(x[1]) >= top - min_gain), key=lambda x: len(x[0]))
        table = [{"tta": list(n) or ["identity"], "n_transforms": max(1, len(n)), "best_dice": r["best"]["dice"], "gain": r["gain"]}
                 for n, r in results]
        best_names = max(results, key=lambda x: best_dice(x[1]))[0]
        if names == best_names:
            why = f"{describe_tta(names)} gives the best tuned Dice {best_dice(chosen):.4f}"
        else:
            why = (f"{describe_tta(names)} ({max(1, len(names))} passes) is within {min_gain:g} of the best, "
                   f"{describe_tta(best_names)} ({top:.4f}): the extra passes are not worth their cost")
        return {**chosen, "tta_sets": table, "tta_reason": why}


def tune_over_tta(
    probs_by_set: Sequence[tuple[Sequence[str], Sequence[np.ndarray]]],
    masks: Sequence[np.ndarray],
    contract: MetricContract,
    thresholds: Sequence[float],
    area_fractions: Sequence[float],
    keep_largest: Sequence[bool] = (False, True),
    min_gain: float = 0.005,
    min_scores: Sequence[float] = (0.0,),
    where: str = "validation",
) -> dict:
    """`tune_postprocess` on the probabilities of each TTA set; the cheapest set worth its cost wins.

    Each set is searched on its own probabilities and must beat the same raw baseline (the first
    set's, the plain prediction). The set with the best tuned Dice is found; then the set with the
    fewest transforms whose best is within `min_gain` of it is taken: a TTA set that adds inference
    cost must add Dice too. `TTARuleSearch` does the same case by case.

    Args:
        probs_by_set: (transform names, per-case probabilities) per TTA set; the first must be
            the plain prediction (('identity',)).
        (the rest as `tune_postprocess`)

    Returns:
        `tune_postprocess`'s result for the set taken, plus "tta_sets": [{"tta", "n_transforms",
        "best_dice", "gain"}] and "tta_reason".
    """
    search = TTARuleSearch([names for names, _ in probs_by_set], contract, thresholds, area_fractions, keep_largest,
                           min_scores)
    for i, m in enumerate(masks):
        search.add([probs[i] for _, probs in probs_by_set], m)
    return search.result(min_gain, where)


def case_dice(pred: np.ndarray, truth: np.ndarray, contract: MetricContract) -> float:
    """The Dice of one case's final mask under the contract's empty policy (the paired statistics' unit)."""
    tp, fp, fn, tn, ee = _case_counts(np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool))
    return dice_from_counts([(tp, fp, fn, tn, ee)], contract.model_copy(update={"reduction": "per_image"}))

