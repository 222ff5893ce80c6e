"""Augmentation: each transform against a direct construction, determinism, offline copies."""

import numpy as np
import pytest

from cifar_scratch.config import AugmentConfig
from cifar_scratch.data import augment
from cifar_scratch.data.augment import AugmentDraw
from cifar_scratch.errors import ConfigError


def batch(n=6, h=7, w=9, c=3, dtype=np.uint8, seed=0):
    return np.random.default_rng(seed).integers(1, 256, (n, h, w, c)).astype(dtype)  # no zeros: blanks are visible


def test_flip_mirrors_exactly_the_drawn_images():
    images = batch()
    flip = np.array([True, False, True, True, False, False])
    out = augment.apply(images, AugmentDraw(flip, None, None), AugmentConfig(flip=True))
    assert np.array_equal(out[flip], images[flip][:, :, ::-1])
    assert np.array_equal(out[~flip], images[~flip])


@pytest.mark.parametrize("dy,dx", [(0, 0), (2, -1), (-3, 3), (1, 0)])
def test_zero_padded_translation_moves_content_by_the_offset(dy, dx):
    images = batch(n=1)
    config = AugmentConfig(translate=3, padding="zero")
    out = augment.apply(images, AugmentDraw(None, np.array([[dy, dx]]), None), config)[0]
    h, w = images.shape[1:3]
    expected = np.zeros_like(images[0])
    expected[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = images[0][
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    assert np.array_equal(out, expected)


def test_reflect_translation_is_a_crop_of_the_reflect_padded_image():
    images = batch()
    t = 3
    shift = np.random.default_rng(1).integers(-t, t + 1, size=(len(images), 2))
    out = augment.apply(images, AugmentDraw(None, shift, None), AugmentConfig(translate=t))
    padded = np.pad(images, ((0, 0), (t, t), (t, t), (0, 0)), mode="reflect")
    h, w = images.shape[1:3]
    for i, (dy, dx) in enumerate(shift):
        assert np.array_equal(out[i], padded[i, t - dy : t - dy + h, t - dx : t - dx + w]), i


@pytest.mark.parametrize("padding", ["reflect", "zero"])
def test_flip_then_translate(padding):
    images = batch(n=2)
    shift = np.array([[1, 2], [-2, -1]])
    config = AugmentConfig(flip=True, translate=2, padding=padding)
    both = augment.apply(images, AugmentDraw(np.array([True, True]), shift, None), config)
    flipped = images[:, :, ::-1]
    assert np.array_equal(both, augment.apply(flipped, AugmentDraw(None, shift, None), config))


def test_cutout_erases_one_square_clipped_at_the_border():
    images = batch(n=2, h=10, w=10)
    centres = np.array([[5, 4], [0, 9]])
    out = augment.apply(images, AugmentDraw(None, None, centres), AugmentConfig(cutout=4))
    expected = images.copy()
    expected[0, 3:7, 2:6] = 0
    expected[1, 0:2, 7:10] = 0
    assert np.array_equal(out, expected)


def test_same_seed_same_batch_and_input_untouched():
    images = batch(n=64)
    original = images.copy()
    config = AugmentConfig(flip=True, translate=2, cutout=3)
    a = augment.augment(images, config, np.random.default_rng(5))
    b = augment.augment(images, config, np.random.default_rng(5))
    c = augment.augment(images, config, np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(images, original)
    assert a.dtype == np.uint8 and a.shape == images.shape


def test_float32_batches_stay_float32():
    images = batch(dtype=np.float32)
    out = augment.augment(images, AugmentConfig(flip=True, translate=1, padding="zero", cutout=2), np.random.default_rng(0))
    assert out.dtype == np.float32


def test_disabled_augmentation_is_free():
    images = batch()
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert augment.augment(images, AugmentConfig(), rng) is images
    assert rng.bit_generator.state == state


def test_flip_probability_and_shift_range():
    config = AugmentConfig(flip=True, translate=2)
    choice = augment.draw(20000, 32, 32, config, np.random.default_rng(0))
    assert abs(choice.flip.mean() - 0.5) < 0.02
    assert set(np.unique(choice.shift)) == {-2, -1, 0, 1, 2}


def test_reflect_shift_must_be_smaller_than_the_image():
    with pytest.raises(ConfigError, match="data.augment.translate: reflect padding needs a shift smaller"):
        augment.augment(batch(h=4, w=4), AugmentConfig(translate=4), np.random.default_rng(0))


def test_offline_copies_follow_the_originals():
    images, labels = batch(n=5), np.arange(5)
    config = AugmentConfig(flip=True, translate=1, copies=2)
    out, out_labels = augment.augmented_copies(images, labels, config, np.random.default_rng(0))
    assert out.shape == (15, *images.shape[1:]) and out.dtype == np.uint8
    assert np.array_equal(out[:5], images) and out_labels.tolist() == [0, 1, 2, 3, 4] * 3
    again, _ = augment.augmented_copies(images, labels, config, np.random.default_rng(0))
    assert np.array_equal(out, again)
    assert not np.array_equal(out[5:10], out[10:15])


def test_copies_need_a_transform():
    with pytest.raises(ValueError, match="copies: needs at least one of flip, translate, cutout"):
        AugmentConfig(copies=2)


def test_tta_views_are_the_image_its_mirror_and_one_pixel_shifts():
    from cifar_scratch.data.augment import tta_views

    images = np.random.default_rng(0).integers(0, 255, (3, 5, 6, 2), dtype=np.uint8)
    assert tta_views(images, "none") == [(images, 1.0)]
    (base, w1), (mirror, w2) = tta_views(images, "flip")
    assert base is images and np.array_equal(mirror, images[:, :, ::-1]) and w1 == w2 == 0.5
    pairs = tta_views(images, "flip+translate")
    views = [view for view, _ in pairs]
    assert [w for _, w in pairs] == [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    # airbench's views: crops of the reflect-padded images, and the mirror of each crop
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    up_left, down_right = padded[:, 2:7, 2:8], padded[:, 0:5, 0:6]
    assert np.array_equal(views[2], up_left) and np.array_equal(views[3], up_left[:, :, ::-1])
    assert np.array_equal(views[4], down_right) and np.array_equal(views[5], down_right[:, :, ::-1])
