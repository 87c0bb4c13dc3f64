"""How should an image head's "has foreground" probability meet the mask? Three ways, on held-out folds.

A run trained with `model.image_head: true` (bench/recipe/cv_defaults.py, its held-out fold never trained
on) is read three ways at the contract's threshold 0.5, with no post-processing:
  product   sigmoid(mask) x sigmoid(image), what the network returns in eval mode
  mask      the mask head alone (the image head ignored)
  gate      the mask head alone where sigmoid(image) >= 0.5, empty elsewhere (the SIIM-ACR winners' classifier gate)
and, for each, per-image Dice (empty=one), Dice on lesion images and the false-alarm rate on normal images;
also the AUROC of the image probability and of the mask's peak probability for "the image has a lesion".

    .venv/bin/python -u bench/recipe/imghead_probe.py RUN_DIR [RUN_DIR ...] --out imghead_probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.recipe.gate_probe import auroc, dice_empty_one  # noqa: E402
from medseg.models.flexunet import pool_deepest  # noqa: E402
from medseg.runfolder import load_network, load_run_config  # noqa: E402
from medseg.runfolder import load_split_part  # noqa: E402


def heads(net, images: np.ndarray, batch: int = 16):
    """(mask probabilities, image probabilities) of a headed network in eval mode, float32."""
    deepest, mask_logits = [], []
    hooks = [net.encoder.register_forward_hook(lambda m, i, o: deepest.append(o[-1])),
             net.segmentation_head.register_forward_hook(lambda m, i, o: mask_logits.append(o))]
    masks, images_p = [], []
    try:
        with torch.no_grad():
            for s in range(0, len(images), batch):
                net(torch.from_numpy(np.ascontiguousarray(images[s:s + batch], dtype=np.float32)))
                masks.append(torch.sigmoid(mask_logits[-1]).numpy()[:, 0])
                images_p.append(torch.sigmoid(net.image_head(pool_deepest(deepest[-1]))).numpy()[:, 0])
    finally:
        for h in hooks:
            h.remove()
    return np.concatenate(masks), np.concatenate(images_p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    results = {"command": " ".join(sys.argv), "runs": []}
    for rd in a.runs:
        cfg = load_run_config(rd)
        val = load_split_part(rd, cfg)
        net, _ = load_network(rd, cfg, val.images.shape[1])
        net = net.float().eval()
        pm, pi = heads(net, val.images)
        truths = val.masks[:, 0] > 0 if val.masks.ndim == 4 else val.masks > 0
        lesion = truths.reshape(len(truths), -1).any(1)
        preds = {"product": pm * pi[:, None, None] >= 0.5, "mask": pm >= 0.5,
                 "gate": (pm >= 0.5) & (pi >= 0.5)[:, None, None]}
        row = {"run": str(rd), "n": int(len(truths)), "lesion_images": int(lesion.sum()),
               "auroc_image_prob": auroc(pi[lesion], pi[~lesion]),
               "auroc_mask_peak": auroc(pm.reshape(len(pm), -1).max(1)[lesion], pm.reshape(len(pm), -1).max(1)[~lesion])}
        for name, p in preds.items():
            d = np.array([dice_empty_one(p[i], truths[i]) for i in range(len(p))])
            row[name] = {"dice": float(d.mean()), "dice_lesion": float(d[lesion].mean()),
                         "fp_rate_normal": float(np.mean([p[i].any() for i in np.flatnonzero(~lesion)])),
                         "lesion_images_emptied": int(sum(not p[i].any() for i in np.flatnonzero(lesion)))}
        print(f"{rd.name}: AUROC image prob {row['auroc_image_prob']:.3f}, mask peak {row['auroc_mask_peak']:.3f}")
        for name in preds:
            r = row[name]
            print(f"  {name:8s} Dice {r['dice']:.4f}  lesion {r['dice_lesion']:.4f}  FP normals {r['fp_rate_normal']:.2f}  "
                  f"lesion images emptied {r['lesion_images_emptied']}", flush=True)
        results["runs"].append(row)
    a.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
