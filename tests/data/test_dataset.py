import numpy as np

from medseg.data.augment import build_augment
from medseg.data.dataset import SeededSampler, SegDataset


def test_sampler_depends_only_on_seed_and_epoch():
    s = SeededSampler(10, seed=1, num_samples=25)
    s.set_epoch(2)
    a = list(s)
    t = SeededSampler(10, seed=1, num_samples=25)
    t.set_epoch(0)
    list(t)
    t.set_epoch(2)
    assert list(t) == a  # replay after a "resume" at epoch 2
    t.set_epoch(3)
    assert list(t) != a
    assert len(a) == 25 and {i for i, _ in a} == set(range(10))


def test_sampler_shards_ranks_without_overlap_and_each_step_is_the_single_process_batch():
    whole = list(SeededSampler(12, seed=0, num_samples=12))
    ranks = [list(SeededSampler(12, seed=0, num_samples=12, rank=rank, world_size=3)) for rank in range(3)]
    assert sorted(i for r in ranks for i, _ in r) == list(range(12))
    bs = 6  # 2 per rank
    for step in range(2):
        got = sorted(d for r in ranks for d in r[step * 2 : step * 2 + 2])
        assert got == sorted(whole[step * bs : (step + 1) * bs])


def test_augmentation_is_reproducible_and_keeps_masks_aligned_and_binary():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(3, 48, 48)).astype(np.float32)
    mask = np.zeros((48, 48), np.uint8)
    mask[10:20, 12:30] = 1
    img[:, mask == 1] = 10.0  # the lesion is where the image is bright: must stay so
    ds = SegDataset(img[None], mask[None], build_augment("heavy"))
    x1, y1, _ = ds[(0, 123)]
    x2, y2, _ = ds[(0, 123)]
    assert np.array_equal(x1.numpy(), x2.numpy()) and np.array_equal(y1.numpy(), y2.numpy())
    for seed in range(20):
        x, y, _ = ds[(0, seed)]
        y = y.numpy()[0]
        assert set(np.unique(y)) <= {0.0, 1.0}
        if y.sum() > 20:
            # every channel moved together with the mask: bright inside, not outside
            inside = x.numpy()[:, y == 1].mean(axis=1)
            assert (inside > 5).all(), inside
