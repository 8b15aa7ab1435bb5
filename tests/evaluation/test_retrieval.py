"""Retrieval recall on hand-made cases whose answers are derived by hand in the comments."""

import math

import numpy as np
import pytest

from rs_vlm_app.evaluation.retrieval import group_captions, retrieval_metrics


def unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


# Images at 0, 90 and 45 degrees; similarity = cos(angle difference).
IMAGES = np.array([unit(0), unit(90), unit(45)])
# Texts: T0, T1 describe I0; T2 describes I1; T3, T4 describe I2.
TEXTS = np.array([unit(80), unit(10), unit(50), unit(0), unit(85)])
TEXT_IMAGE = [0, 0, 1, 2, 2]


def test_recall_matches_hand_derivation():
    # image -> text (rank = captions of OTHER images scoring >= the image's best caption):
    #   I0: best own T1 (cos10=.985); T3 (cos0=1.0) is above  -> rank 1
    #   I1: own T2 (cos40=.766); T0 (.985), T4 (.996) above     -> rank 2
    #   I2: best own T4 (cos40=.766); T0, T1 (cos35=.819), T2 (cos5=.996) above -> rank 3
    # text -> image (rank = other images scoring >= its image):
    #   T0: I0 .174 < I1 .985, I2 .819 -> 2;  T1: 0;  T2: I2 .996 > I1 .766 -> 1
    #   T3: I0 1.0 > I2 .707 -> 1;  T4: I1 .996 > I2 .766 -> 1
    result = retrieval_metrics(IMAGES, TEXTS, TEXT_IMAGE, ks=(1, 2, 3))
    assert result.image_to_text == pytest.approx({1: 0.0, 2: 100 / 3, 3: 200 / 3})
    assert result.text_to_image == pytest.approx({1: 20.0, 2: 80.0, 3: 100.0})
    assert result.mean_recall == pytest.approx((0 + 100 / 3 + 200 / 3 + 20 + 80 + 100) / 6)
    assert result.as_dict()["text_to_image_R@2"] == pytest.approx(80.0)


def test_embeddings_need_not_be_normalised():
    scaled = retrieval_metrics(IMAGES * [[3.0], [0.5], [7.0]], TEXTS * 2.5, TEXT_IMAGE, ks=(1, 2, 3))
    assert scaled.as_dict() == pytest.approx(retrieval_metrics(IMAGES, TEXTS, TEXT_IMAGE, ks=(1, 2, 3)).as_dict())


def test_ties_count_against_the_query():
    # All embeddings equal: a collapsed model must not score 100 at R@1.
    images = np.ones((3, 4))
    texts = np.ones((6, 4))
    result = retrieval_metrics(images, texts, [0, 0, 1, 1, 2, 2], ks=(1, 4, 5))
    # image -> text: the 4 captions of other images tie with the best own caption -> rank 4
    assert result.image_to_text == {1: 0.0, 4: 0.0, 5: 100.0}
    # text -> image: the 2 other images tie -> rank 2
    assert result.text_to_image == {1: 0.0, 4: 100.0, 5: 100.0}


def test_perfect_embeddings_score_100():
    images = np.eye(4)
    texts = np.repeat(np.eye(4), 3, axis=0)  # three identical captions per image
    result = retrieval_metrics(images, texts, np.repeat(np.arange(4), 3))
    assert result.mean_recall == 100.0


def test_image_without_caption_is_never_retrieved():
    result = retrieval_metrics(np.eye(3), np.eye(3)[:2], [0, 1], ks=(1, 10))
    assert result.image_to_text == pytest.approx({1: 200 / 3, 10: 200 / 3})


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="one image index per text"):
        retrieval_metrics(np.eye(2), np.eye(2), [0])
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(np.eye(2), np.eye(2), [0, 2])


def test_group_captions_keeps_first_seen_order():
    images, text_image = group_captions(["b.png", "a.png", "b.png", "c.png", "a.png"])
    assert images == ["b.png", "a.png", "c.png"]
    assert text_image.tolist() == [0, 1, 0, 2, 1]
