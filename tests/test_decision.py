"""Decision rules on hand-made probability tables: thresholds, their search, prior correction, voting."""
import numpy as np
import pytest

from dmha.decision import (DecisionError, DecisionRule, apply_thresholds, hard_vote, parse_prior, prior_correct,
                           train_prior, tune_thresholds)

P = np.array([
    [0.50, 0.30, 0.20],  # top class 0 passes 0.4 → 0
    [0.35, 0.45, 0.20],  # top class 1 fails 0.6; next class 0 (0.35) fails 0.4; class 2 (0.20) passes 0.1 → 2
    [0.38, 0.32, 0.30],  # 0 fails, 1 fails (0.32 < 0.6), 2 passes (0.30 ≥ 0.1) → 2
    [0.39, 0.59, 0.02],  # nobody passes → keep the top class 1
    [0.40, 0.55, 0.05],  # 1 fails, 0 passes exactly at its threshold (≥) → 0
])
T = np.array([0.4, 0.6, 0.1])


def test_threshold_rule_follows_the_paper_case_by_case():
    assert apply_thresholds(P, T).tolist() == [0, 2, 2, 1, 0]


def test_zero_thresholds_and_none_are_argmax():
    assert apply_thresholds(P, np.zeros(3)).tolist() == P.argmax(1).tolist()
    assert apply_thresholds(P, None).tolist() == P.argmax(1).tolist()
    assert apply_thresholds(np.zeros((0, 3)), T).tolist() == []


def test_ovr_search_picks_the_binary_macro_f1_optimum():
    # Class 1 is over-predicted: items 0-2 are class 0 with p1 = 0.55-0.6. One-vs-rest for class 1,
    # "predict 1 iff p1 ≥ t" is perfect for t in (0.6, 0.9]; the lowest such grid value is 0.61.
    probs = np.array([[0.45, 0.55], [0.42, 0.58], [0.40, 0.60], [0.10, 0.90], [0.05, 0.95], [0.80, 0.20]])
    targets = np.array([0, 0, 0, 1, 1, 0])
    thresholds = tune_thresholds(probs, targets, "ovr")
    assert thresholds[1] == pytest.approx(0.61)
    assert thresholds[0] == pytest.approx(0.11)  # "predict 0 iff p0 ≥ t" is perfect for t in (0.10, 0.40]
    assert apply_thresholds(probs, thresholds).tolist() == targets.tolist()


def test_multiclass_search_never_lowers_tuning_macro_f1():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=200)
    targets = rng.integers(0, 4, size=200)
    probs[np.arange(200), targets] += 0.3 * rng.random(200)  # a weakly informative "model"
    probs /= probs.sum(1, keepdims=True)
    from dmha.metrics import classification_report

    def f1(pred):
        return classification_report(targets, pred, list("abcd"))["macro_f1"]

    tuned = tune_thresholds(probs, targets, "multiclass")
    assert f1(apply_thresholds(probs, tuned)) >= f1(probs.argmax(1))
    with pytest.raises(DecisionError, match="objective"):
        tune_thresholds(probs, targets, "best")


def test_prior_correction_is_bayes_rule():
    probs = np.array([[0.6, 0.4], [0.2, 0.8]])
    source, target = np.array([0.75, 0.25]), np.array([0.5, 0.5])
    shifted = prior_correct(probs, source, target)
    expected = probs / source
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(shifted, expected, rtol=1e-9)
    assert shifted.argmax(1).tolist() == [1, 1]  # the rare class gains: 0.6/0.75 < 0.4/0.25
    np.testing.assert_allclose(prior_correct(probs, source, source), probs, rtol=1e-9)


def test_parse_prior_and_train_prior():
    labels = ["a", "b"]
    assert parse_prior("none", labels) is None
    np.testing.assert_allclose(parse_prior("uniform", labels), [0.5, 0.5])
    np.testing.assert_allclose(parse_prior("a:3, b:1", labels), [0.75, 0.25])
    for bad in ("a:1", "a:1,b:0", "a:x,b:1", "c:1,a:1,b:1"):
        with pytest.raises(DecisionError, match="decision.prior"):
            parse_prior(bad, labels)
    np.testing.assert_allclose(train_prior({"a": 2, "b": 0}, labels), [0.75, 0.25])  # add-one smoothing


def test_decision_rule_stacks_prior_then_thresholds():
    rule = DecisionRule(["a", "b"], thresholds=[0.0, 0.7], prior_source=np.array([0.75, 0.25]),
                        prior_target=np.array([0.5, 0.5]))
    probs = np.array([[0.6, 0.4], [0.3, 0.7]])
    # corrected: [[1/3, 2/3], [0.125, 0.875]] → item 0: b fails 0.7, a passes 0 → a; item 1: b passes → b
    assert rule.decide(probs).tolist() == [0, 1]


def test_hard_vote_majority_and_ties():
    votes = np.array([
        [0, 1, 2, 2, 0],  # member 0 (best on dev)
        [0, 2, 1, 1, 1],
        [1, 2, 0, 1, 2],
    ])
    # item 0: 0 wins 2-1; item 1: 2 wins; item 2: three-way tie → member 0's vote (2);
    # item 3: 1 wins 2-1 although member 0 says 2; item 4: three-way tie → member 0 (0)
    assert hard_vote(votes, 3).tolist() == [0, 2, 2, 1, 0]
    # Two-member tie where member 0 is in the tie; four members 2-2 where member 0 is in the tie.
    assert hard_vote(np.array([[1], [0]]), 2).tolist() == [1]
    assert hard_vote(np.array([[3], [0], [0], [3]]), 4).tolist() == [3]
    # Four members, 2-1-1, the best member in the minority: the majority wins.
    assert hard_vote(np.array([[2], [0], [0], [1]]), 3).tolist() == [0]
