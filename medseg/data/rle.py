"""SIIM-ACR pneumothorax run-length encoding, as the competition's mask_functions.py defined it.

The format differs from the common Kaggle RLE in two ways:

* pixel order is column-major: the competition decoded with ``rle2mask(rle, W, H).T``, i.e.
  pixel number p is at row ``p % H``, column ``p // H``;
* each run's start is RELATIVE: it counts the background pixels since the end of the
  previous run (the first start counts from pixel 0), and starts are 0-based.

Example: "1 2 1 1" on an image with H=2, W=3 sets pixels 1, 2 (first run) and 4 (one
background pixel after the run ended at 3), i.e. (row, col) = (1, 0), (0, 1), (0, 2):

    [[0, 1, 1],
     [1, 0, 0]]

'-1' (or an empty string) is an empty mask.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError


def _parse(rle: str) -> np.ndarray:
    text = (rle or "").strip()
    if text in ("", "-1"):
        return np.zeros(0, dtype=np.int64)
    try:
        nums = np.array([int(t) for t in text.split()], dtype=np.int64)
    except ValueError:
        raise ValueError("run-length string must be integers separated by spaces") from None
    except OverflowError:
        raise ValueError("run-length string holds a number too large for any image") from None
    if nums.size % 2:
        raise ValueError("run-length string must hold (start, length) pairs, got an odd count")
    if (nums < 0).any():
        raise ValueError("run-length starts and lengths must be >= 0")
    return nums


def check_rle(rle: str) -> None:
    """Validate the syntax of an RLE string (integers in pairs, or '-1').

    Args:
        rle: the string.

    Raises:
        ValueError: with a short reason.
    """
    _parse(rle)


def rle_decode(rle: str, height: int, width: int) -> np.ndarray:
    """Decode a SIIM-ACR RLE string into a binary mask.

    Args:
        rle: "start length start length ...", starts relative to the previous run's end;
            '-1' or '' for an empty mask.
        height: image rows.
        width: image columns.

    Returns:
        (height, width) uint8 mask in {0, 1}.

    Raises:
        ValueError: malformed string, or runs beyond the last pixel.
    """
    nums = _parse(rle)
    flat = np.zeros(height * width, dtype=np.uint8)
    if nums.size:
        starts_rel, lengths = nums[0::2], nums[1::2]
        # absolute start of run i = sum of all earlier gaps and lengths plus its own gap
        ends = np.cumsum(starts_rel + lengths)
        starts = ends - lengths
        if ends[-1] > flat.size:
            raise ValueError(f"runs reach pixel {int(ends[-1])} but the image has only {flat.size} pixels ({height}x{width})")
        # difference array: +1 at each start, -1 at each end, so overlapping/adjacent runs stay correct
        delta = np.zeros(flat.size + 1, dtype=np.int64)
        np.add.at(delta, starts, 1)
        np.add.at(delta, ends, -1)
        flat = (np.cumsum(delta[:-1]) > 0).astype(np.uint8)
    # column-major, as the competition's rle2mask(rle, W, H).T
    return flat.reshape((width, height)).T.copy()


def rle_encode(mask: np.ndarray) -> str:
    """Encode a binary mask in the SIIM-ACR format (inverse of `rle_decode`).

    The competition's original mask2rle only emitted a run when it saw the pixel after it
    turn to background, so a run touching the last pixel (bottom-right) was silently
    dropped; this encoder always closes the final run.

    Args:
        mask: (H, W) array; any value > 0 is foreground.

    Returns:
        The RLE string, or '-1' for an empty mask.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"rle_encode expects a 2D mask, got shape {m.shape}")
    flat = (m.T.reshape(-1) > 0).astype(np.int8)  # column-major pixel order
    if not flat.any():
        return "-1"
    padded = np.concatenate([[0], flat, [0]])
    edges = np.flatnonzero(np.diff(padded))
    starts, ends = edges[0::2], edges[1::2]
    lengths = ends - starts
    prev_end = np.concatenate([[0], ends[:-1]])
    rel = starts - prev_end
    out = np.empty(rel.size * 2, dtype=np.int64)
    out[0::2], out[1::2] = rel, lengths
    return " ".join(map(str, out.tolist()))


def read_rle_csv(path: Path, rows: bool = True, keep=None) -> dict[str, list[str]]:
    """Read a SIIM-ACR RLE CSV (ImageId, EncodedPixels).

    Header names are matched after stripping spaces (the real train-rle.csv has the header
    ' EncodedPixels' and values with a leading space). An image may appear on several rows
    (one per lesion); the caller ORs them.

    Args:
        path: the CSV file.
        rows: False keeps the ImageIds alone (each maps to an empty tuple; rows are still
            checked): what a load needs when every unit is in the cache already, whose key
            holds this CSV's size and mtime (SIIM's table is ~7 MB of text).
        keep: ImageIds whose rows are kept; any other maps to None (rows not held): what one
            of several parallel builders needs. None: every row.

    Returns:
        ImageId -> list of RLE strings in file order.

    Raises:
        MedsegError: missing file, missing columns, or a bad row; names the file (and line).
    """
    path = Path(path)
    if not path.is_file():
        raise MedsegError(f"{path}: no such file (data.rle_csv)")
    out: dict[str, list[str]] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise MedsegError(f"{path}: empty file, expected columns ImageId,EncodedPixels")
            names = [h.strip() for h in header]
            if "ImageId" not in names or "EncodedPixels" not in names:
                raise MedsegError(f"{path}: expected columns ImageId,EncodedPixels, got {','.join(names)}")
            i_id, i_rle = names.index("ImageId"), names.index("EncodedPixels")
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) <= max(i_id, i_rle):
                    raise MedsegError(f"{path} line {line}: expected {len(names)} columns, got {len(row)}")
                image_id, rle = row[i_id].strip(), row[i_rle].strip()
                if not image_id:
                    raise MedsegError(f"{path} line {line}: empty ImageId")
                try:
                    check_rle(rle)
                except ValueError as e:
                    raise MedsegError(f"{path} line {line}: ImageId {image_id}: {e}") from None
                if rows and (keep is None or image_id in keep):
                    out.setdefault(image_id, []).append(rle)
                elif rows:
                    out[image_id] = None
                else:
                    out[image_id] = ()  # one shared empty tuple, not a list per image
    except (UnicodeDecodeError, csv.Error) as e:
        raise MedsegError(f"{path}: not a readable CSV file ({type(e).__name__})") from None
    return out


def write_rle_csv(path: Path, rows: dict[str, np.ndarray]) -> None:
    """Write masks as an ImageId,EncodedPixels CSV (one row per image, '-1' when empty).

    Args:
        path: output file (parent folders are created).
        rows: ImageId -> (H, W) mask (any value > 0 is foreground).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageId", "EncodedPixels"])
        for image_id, mask in rows.items():
            w.writerow([image_id, rle_encode(mask)])
