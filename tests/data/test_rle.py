"""SIIM-ACR RLE: checked against a transcription of the competition's mask_functions.py."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data.rle import read_rle_csv, rle_decode, rle_encode, write_rle_csv
from medseg.errors import MedsegError


def competition_rle2mask(rle: str, width: int, height: int) -> np.ndarray:
    """The competition's rle2mask, loop for loop (returns (width, height); callers transpose)."""
    mask = np.zeros(width * height)
    array = np.asarray([int(x) for x in rle.split()])
    starts, lengths = array[0::2], array[1::2]
    current_position = 0
    for index, start in enumerate(starts):
        current_position += start
        mask[current_position:current_position + lengths[index]] = 255
        current_position += lengths[index]
    return mask.reshape(width, height)


def competition_mask2rle(img: np.ndarray, width: int, height: int) -> str:
    """The competition's mask2rle (img indexed [x][y] with 255 foreground), bug included."""
    rle = []
    last_color = 0
    current_pixel = 0
    run_start = -1
    run_length = 0
    for x in range(width):
        for y in range(height):
            current_color = img[x][y]
            if current_color != last_color:
                if current_color == 255:
                    run_start = current_pixel
                    run_length = 1
                else:
                    rle.append(str(run_start))
                    rle.append(str(run_length))
                    run_start = -1
                    run_length = 0
                    current_pixel = 0
            elif run_start > -1:
                run_length += 1
            last_color = current_color
            current_pixel += 1
    return " ".join(rle)


def test_hand_checked_example():
    # H=2, W=3; column-major pixels: 0=(0,0) 1=(1,0) 2=(0,1) 3=(1,1) 4=(0,2) 5=(1,2)
    # "1 2" -> pixels 1, 2; the run ends at 3; "1 1" skips pixel 3 and sets pixel 4
    expected = np.array([[0, 1, 1], [1, 0, 0]], dtype=np.uint8)
    got = rle_decode("1 2 1 1", 2, 3)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    assert rle_encode(expected) == "1 2 1 1"


@pytest.mark.parametrize("empty", ["-1", " -1", "", "  "])
def test_empty(empty):
    m = rle_decode(empty, 4, 5)
    assert m.shape == (4, 5) and not m.any()
    assert rle_encode(np.zeros((4, 5))) == "-1"


def test_decode_matches_competition_on_random_masks(rng):
    for _ in range(20):
        h, w = rng.integers(3, 30, size=2)
        mask = (rng.random((h, w)) < rng.uniform(0.05, 0.6)).astype(np.uint8)
        mask[-1, -1] = 0  # the competition encoder cannot express a run reaching the last pixel
        ref = competition_mask2rle((mask * 255).T, w, h)
        assert rle_encode(mask) == (ref or "-1")
        if ref:
            np.testing.assert_array_equal(rle_decode(ref, h, w), (competition_rle2mask(ref, w, h).T > 0).astype(np.uint8))


def test_round_trip_random_incl_first_and_last_pixel(rng):
    for i in range(30):
        h, w = rng.integers(1, 40, size=2)
        mask = (rng.random((h, w)) < 0.3).astype(np.uint8)
        if i % 2 == 0:
            mask[0, 0] = 1
            mask[-1, -1] = 1
        np.testing.assert_array_equal(rle_decode(rle_encode(mask), h, w), mask)


def test_run_reaching_last_pixel_is_emitted():
    mask = np.zeros((3, 4), dtype=np.uint8)
    mask[-1, -1] = 1
    mask[-2, -1] = 1  # column-major: pixels 10 and 11
    assert competition_mask2rle((mask * 255).T, 4, 3) == ""  # the original dropped it
    assert rle_encode(mask) == "10 2"
    full = np.ones((2, 2))
    assert rle_encode(full) == "0 4"


def test_decode_rejects_bad_strings():
    with pytest.raises(ValueError, match="pixels"):
        rle_decode("5 10", 3, 3)
    with pytest.raises(ValueError, match="pairs"):
        rle_decode("1 2 3", 3, 3)
    with pytest.raises(ValueError, match="integers"):
        rle_decode("1 x", 3, 3)


def test_read_csv_like_train_rle(tmp_path):
    p = tmp_path / "train-rle.csv"
    # header and values exactly as the real file: ' EncodedPixels' with a leading space
    p.write_text("ImageId, EncodedPixels\nA, -1\nB, 1 2 1 1\nB, 0 1\nC,3 1\n")
    rows = read_rle_csv(p)
    assert rows == {"A": ["-1"], "B": ["1 2 1 1", "0 1"], "C": ["3 1"]}
    assert read_rle_csv(p, rows=False) == {"A": (), "B": (), "C": ()}  # the ImageIds alone
    merged = np.zeros((2, 3), dtype=np.uint8)
    for r in rows["B"]:
        merged |= rle_decode(r, 2, 3)
    np.testing.assert_array_equal(merged, [[1, 1, 1], [1, 0, 0]])


@pytest.mark.parametrize(
    "body, line",
    [("A,1 2 3\n", 2), ("A,-1\nB,1 z\n", 3), ("A,-1\n,1 2\n", 3)],
)
def test_read_csv_bad_rows_name_file_and_line(tmp_path, body, line, one_line):
    p = tmp_path / "rle.csv"
    p.write_text("ImageId,EncodedPixels\n" + body)
    for rows in (True, False):  # rows are checked even when not kept
        with pytest.raises(MedsegError) as e:
            read_rle_csv(p, rows=rows)
        one_line(e, p, f"line {line}")


def test_read_csv_missing_column(tmp_path, one_line):
    p = tmp_path / "rle.csv"
    p.write_text("Image,Pixels\nA,-1\n")
    with pytest.raises(MedsegError) as e:
        read_rle_csv(p)
    one_line(e, p, "ImageId")


def test_write_then_read(tmp_path, rng):
    masks = {"x": (rng.random((7, 5)) < 0.4).astype(np.uint8), "y": np.zeros((7, 5), np.uint8)}
    masks["x"][-1, -1] = 1
    p = tmp_path / "out" / "pred.csv"
    write_rle_csv(p, masks)
    assert p.read_text().splitlines()[0] == "ImageId,EncodedPixels"
    rows = read_rle_csv(p)
    assert rows["y"] == ["-1"]
    np.testing.assert_array_equal(rle_decode(rows["x"][0], 7, 5), masks["x"])
