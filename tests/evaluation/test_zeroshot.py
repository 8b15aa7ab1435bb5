"""Zero-shot classifier and metrics on hand-made cases whose answers are derived by hand."""

import numpy as np
import pytest

from rs_vlm_app.evaluation.zeroshot import (
    build_classifier,
    classifier_from_prompt_embeddings,
    fill_template,
    prompts,
    zeroshot_metrics,
)

S = np.sqrt(0.5)


def test_classifier_is_mean_of_normalised_prompts_renormalised():
    embeddings = np.array([
        [[2.0, 0.0], [0.0, 1.0]],    # A: (1,0) and (0,1) -> mean (.5,.5) -> (S, S)
        [[0.0, 3.0], [0.0, 1.0]],    # B: (0,1) twice -> (0,1)
        [[-1.0, 0.0], [-5.0, 0.0]],  # C: (-1,0) twice -> (-1,0); the length 5 must not matter
    ])
    classifier = classifier_from_prompt_embeddings(embeddings)
    np.testing.assert_allclose(classifier, [[S, S], [0, 1], [-1, 0]], atol=1e-12)


def test_build_classifier_expands_prompts_class_major():
    table = {
        "a satellite image of lake.": [1.0, 0.0], "lake from above": [3.0, 0.0],
        "a satellite image of road.": [0.0, 1.0], "road from above": [1.0, 1.0],
    }
    seen = []

    def encode(texts):
        seen.extend(texts)
        return np.array([table[t] for t in texts])

    classifier = build_classifier(encode, ["lake", "road"], ["a satellite image of {}.", "{c} from above"])
    assert seen == ["a satellite image of lake.", "lake from above", "a satellite image of road.", "road from above"]
    # road: (0,1) and (S,S) -> mean (S/2, (1+S)/2) renormalised
    road = np.array([S / 2, (1 + S) / 2])
    np.testing.assert_allclose(classifier, [[1, 0], road / np.linalg.norm(road)], atol=1e-12)


def test_metrics_match_hand_derivation():
    classifier = np.array([[S, S], [0, 1], [-1, 0]])  # A, B, C
    images = np.array([
        [1.0, 0.1],    # A: cos A .774, B .100, C -.995 -> A (right)
        [0.0, 1.0],    # B: A .707, B 1.0, C 0 -> B (right)
        [-1.0, 0.2],   # C: A -.555, B .196, C .981 -> C (right)
        [0.2, 1.0],    # A: A .832, B .981 -> B (wrong), true class 2nd
        [-1.0, -1.0],  # B: C .707 > B -.707 > A -1 -> C (wrong), true class 2nd
    ])
    labels = [0, 1, 2, 0, 1]
    result = zeroshot_metrics(images, classifier, labels, ks=(1, 2))
    assert result.top_k == pytest.approx({1: 60.0, 2: 100.0})
    assert result.predictions.tolist() == [0, 1, 2, 1, 2]
    assert result.confusion.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
    np.testing.assert_allclose(result.per_class, [50.0, 50.0, 100.0])
    assert result.mean_per_class == pytest.approx(200 / 3)
    assert result.as_dict("zs_")["zs_top1"] == pytest.approx(60.0)


def test_a_tie_counts_as_wrong_and_predicts_the_other_class():
    classifier = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    images = np.array([[1.0, 1.0]])  # equally close to classes 0 and 1
    result = zeroshot_metrics(images, classifier, [1], ks=(1, 2))
    assert result.top_k == {1: 0.0, 2: 100.0}
    assert result.predictions.tolist() == [0]
    assert result.confusion[1, 0] == 1


def test_class_without_images_has_nan_accuracy_and_is_left_out_of_the_mean():
    classifier = np.eye(3)
    result = zeroshot_metrics(np.eye(3)[:2], classifier, [0, 1])
    assert np.isnan(result.per_class[2])
    assert result.mean_per_class == 100.0
    assert result.top_k[5] == 100.0


def test_templates_need_a_placeholder():
    assert fill_template("a {} field", "wheat") == "a wheat field"
    assert prompts(["x"], ["{c}!", "{}?"]) == ["x!", "x?"]
    with pytest.raises(ValueError, match="placeholder"):
        fill_template("no slot here", "x")


def test_labels_outside_the_classes_are_rejected():
    with pytest.raises(ValueError, match="labels must lie"):
        zeroshot_metrics(np.eye(2), np.eye(2), [0, 2])
