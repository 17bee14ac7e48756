"""Unit tests of the two-tower modules (single process, unsharded)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from recsys_kedro.models.batch import BatchLayout
from recsys_kedro.models.two_tower import (
    TwoTowerConfig,
    TwoTowerTrainTask,
    build_two_tower,
    item_log_q_from_counts,
    load_two_tower,
    make_batch,
    make_model_file,
    model_from_file,
    negative_features,
)

CONFIG = TwoTowerConfig(num_users=7, num_items=11, embedding_dim=8, layer_sizes=(16, 4))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_two_tower(CONFIG, device="cpu")


def test_forward_shapes_and_normalisation(model):
    batch = make_batch(torch.tensor([0, 1, 6]), torch.tensor([3, 10, 0]), torch.tensor([1, 0, 1]))
    query, candidate, _ = model(batch.sparse_features)
    assert query.shape == (3, 4) and candidate.shape == (3, 4)
    torch.testing.assert_close(query.norm(dim=-1), torch.ones(3))


def test_encoders_match_the_forward_pass(model):
    users, items = torch.tensor([2, 5]), torch.tensor([9, 1])
    query, candidate, _ = model(make_batch(users, items, torch.zeros(2)).sparse_features)
    torch.testing.assert_close(model.encode_users(users), query)
    torch.testing.assert_close(model.encode_items(items), candidate)


def test_config_and_batch_invariants():
    with pytest.raises(ValueError, match="num_users"):
        TwoTowerConfig(num_users=0, num_items=3)
    with pytest.raises(ValueError, match="1-D of one length"):
        make_batch(torch.tensor([1, 2]), torch.tensor([1]), torch.tensor([1, 1]))
    with pytest.raises(AssertionError, match="loss must be one of"):
        TwoTowerTrainTask(build_two_tower(CONFIG), loss="hinge")


def _manual_softmax_loss(q, c, items, labels, temperature, log_q, users=None):
    """Reference: a Python loop over the positive rows."""
    losses = []
    for i in range(len(items)):
        if labels[i] < 0.5:
            continue
        logits = []
        for j in range(len(items)):
            if j != i and items[j] == items[i]:
                continue  # accidental hit: masked
            if users is not None and j != i and users[j] == users[i] and labels[j] > 0.5:
                continue  # the same user's other positive: masked
            logits.append(float(q[i] @ c[j]) / temperature - float(log_q[items[j]]))
        own = float(q[i] @ c[i]) / temperature - float(log_q[items[i]])
        losses.append(-own + math.log(sum(math.exp(x) for x in logits)))
    return sum(losses) / len(losses)


def test_sampled_softmax_matches_reference_with_log_q_and_accidental_hits(model):
    counts = torch.tensor([5, 1, 0, 3, 2, 8, 1, 1, 0, 4, 2])
    log_q = item_log_q_from_counts(counts)
    task = TwoTowerTrainTask(model, loss="softmax", temperature=0.2, item_log_q=log_q)
    users = torch.tensor([0, 1, 2, 3, 4, 5])
    items = torch.tensor([3, 5, 3, 9, 0, 1])  # item 3 twice: an accidental hit
    labels = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    batch = make_batch(users, items, labels)
    loss, (detached, logits, out_labels) = task(batch)
    q, c, _ = model(batch.sparse_features)
    expected = _manual_softmax_loss(q, c, items.tolist(), labels.tolist(), 0.2, log_q)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(logits, (q * c).sum(-1) / 0.2)
    torch.testing.assert_close(out_labels, labels)
    assert not detached.requires_grad


def test_row_weights_make_each_loss_a_weighted_mean(model):
    """A WeightedBatch (per event type weights): the softmax's positives and BCE's rows
    each weigh their weight; all-ones weights give the unweighted loss."""
    users = torch.tensor([0, 1, 2, 3, 4, 5])
    items = torch.tensor([3, 5, 3, 9, 0, 1])
    labels = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    weights = torch.tensor([3.0, 0.5, 1.0, 2.0, 0.25, 1.0])
    layout = BatchLayout(sparse=("user_idx", "item_idx"), weight="weight")
    columns = {"user_idx": users, "item_idx": items, "label": labels}
    batch = layout.to_batch({**columns, "weight": weights})
    torch.testing.assert_close(batch.to("cpu").weights, weights)
    assert layout.dummy_batch().weights.tolist() == [0.0]  # a dummy row weighs nothing
    q, c, _ = model(batch.sparse_features)
    log_q = torch.zeros(11)
    for loss_name in ("softmax", "bce"):
        task = TwoTowerTrainTask(model, loss=loss_name, temperature=0.2, item_log_q=log_q)
        weighted, _ = task(batch)
        plain, _ = task(make_batch(users, items, labels))
        ones, _ = task(layout.to_batch({**columns, "weight": torch.ones(6)}))
        torch.testing.assert_close(ones, plain)
        if loss_name == "bce":
            each = torch.nn.functional.binary_cross_entropy_with_logits(
                (q * c).sum(-1) / 0.2, labels, reduction="none"
            )
            expected = float((each * weights).sum() / weights.sum())
        else:  # each positive row's own softmax term, weighted by its row's weight
            terms = [
                _manual_softmax_loss(q, c, items.tolist(), [float(j == i) for j in range(6)],
                                     0.2, log_q)
                for i in range(6)
            ]  # fmt: skip
            w = weights[labels > 0.5]
            own = torch.tensor([t for t, y in zip(terms, labels, strict=True) if y > 0.5])
            expected = float((own * w).sum() / w.sum())
        assert weighted.item() == pytest.approx(expected, rel=1e-5), loss_name
        assert weighted.item() != pytest.approx(plain.item(), rel=1e-3)


def test_same_user_positives_are_not_negatives_when_masked(model):
    log_q = item_log_q_from_counts(torch.ones(11, dtype=torch.long))
    users = torch.tensor([0, 0, 0, 1, 1, 2])  # user 0: three rows, two of them positive
    items = torch.tensor([3, 5, 7, 9, 0, 1])
    labels = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    batch = make_batch(users, items, labels)
    q, c, _ = model(batch.sparse_features)
    masked = TwoTowerTrainTask(model, temperature=0.2, item_log_q=log_q, mask_same_user=True)
    plain = TwoTowerTrainTask(model, temperature=0.2, item_log_q=log_q)
    want = _manual_softmax_loss(q, c, items.tolist(), labels.tolist(), 0.2, log_q, users.tolist())
    assert masked(batch)[0].item() == pytest.approx(want, rel=1e-5)
    # Fewer negatives in the denominator: the masked loss is lower.
    assert masked(batch)[0].item() < plain(batch)[0].item()


def _mixed_batch(k: int, seed: int = 0):
    """A batch whose layout draws ``k`` uniform negative items per row."""
    names = negative_features(k)
    layout = BatchLayout(
        sparse=("user_idx", "item_idx"), sampled=tuple((n, CONFIG.num_items) for n in names)
    )
    columns = {
        "user_idx": torch.tensor([0, 1, 2, 3, 4, 5]),
        "item_idx": torch.tensor([3, 5, 3, 9, 0, 1]),
        "label": torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0]),
    }
    return layout.to_batch(columns, torch.Generator().manual_seed(seed)), names


def test_uniform_negatives_join_the_softmax_with_a_mixed_log_q():
    torch.manual_seed(0)
    k = 2
    batch, names = _mixed_batch(k)
    model = build_two_tower(CONFIG, device="cpu", negatives=names)
    counts = torch.tensor([5, 1, 0, 3, 2, 8, 1, 1, 0, 4, 2])
    log_q = item_log_q_from_counts(counts)
    task = TwoTowerTrainTask(model, temperature=0.2, item_log_q=log_q)
    q, c, neg = model(batch.sparse_features)
    assert neg.shape == (6 * k, CONFIG.layer_sizes[-1])
    kjt = batch.sparse_features
    neg_items = torch.cat([kjt[n].values() for n in names])
    # The negatives are the item tower's embeddings of the drawn ids.
    torch.testing.assert_close(neg, model.encode_items(neg_items))
    # Reference: every positive scores all 6 batch items and the 12 drawn ones, with
    # q = p + k / num_items (the expected share of candidate slots per item).
    mixed_q = torch.log(log_q.exp() + k / CONFIG.num_items)
    items = batch.sparse_features["item_idx"].values()
    q, c, neg = q.detach(), c.detach(), neg.detach()
    want = _manual_softmax_loss(
        q,
        torch.cat([c, neg]),
        [*items.tolist(), *neg_items.tolist()],
        [*batch.labels.tolist(), *[0.0] * len(neg_items)],
        0.2,
        mixed_q,
    )
    assert task(batch)[0].item() == pytest.approx(want, rel=1e-5)
    # More negatives in the denominator than the plain in-batch loss has.
    plain = TwoTowerTrainTask(build_two_tower(CONFIG, device="cpu"), temperature=0.2)
    plain.two_tower.load_state_dict(model.state_dict())
    assert task(batch)[0].item() != pytest.approx(plain(batch)[0].item(), rel=1e-3)


def test_sampled_features_are_seeded_draws_in_range():
    first, names = _mixed_batch(3, seed=1)
    again, _ = _mixed_batch(3, seed=1)
    other, _ = _mixed_batch(3, seed=2)
    draws = [
        torch.cat([b.sparse_features[n].values() for n in names]) for b in (first, again, other)
    ]
    assert first.sparse_features.keys() == ["user_idx", "item_idx", *names]
    torch.testing.assert_close(draws[0], draws[1])
    assert not torch.equal(draws[0], draws[2])
    assert int(draws[0].min()) >= 0 and int(draws[0].max()) < CONFIG.num_items
    with pytest.raises(ValueError, match="n >= 1"):
        BatchLayout(sparse=("a",), sampled=(("neg", 0),))


def test_a_checkpoint_trained_with_negatives_loads_without_them():
    names = negative_features(2)
    trained = build_two_tower(CONFIG, device="cpu", negatives=names)
    restored = model_from_file(make_model_file(CONFIG, trained.state_dict()))
    assert restored.negative_features == ()
    ids = torch.arange(CONFIG.num_items)
    torch.testing.assert_close(restored.encode_items(ids), trained.encode_items(ids))


def test_bce_loss_is_the_pointwise_objective(model):
    task = TwoTowerTrainTask(model, loss="bce", temperature=0.5)
    batch = make_batch(torch.tensor([0, 1, 2]), torch.tensor([4, 4, 7]), torch.tensor([1, 0, 1]))
    loss, (_, logits, _) = task(batch)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.tensor([1.0, 0.0, 1.0])
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_batch_without_positives_gives_zero_loss_that_still_backpropagates(model):
    task = TwoTowerTrainTask(model, loss="softmax")
    batch = make_batch(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([0.0, 0.0]))
    loss, _ = task(batch)
    assert loss.item() == 0.0
    loss.backward()  # must not raise: the graph is intact
    assert model.query_tower[0].weight.grad is not None


def test_training_steps_reduce_the_loss(model):
    torch.manual_seed(1)
    task = TwoTowerTrainTask(model, loss="softmax", temperature=0.1)
    users = torch.arange(7).repeat(3)
    items = (users * 3) % 11
    batch = make_batch(users, items, torch.ones_like(users, dtype=torch.float32))
    opt = torch.optim.Adam(task.parameters(), lr=0.05)
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss, _ = task(batch)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.5 * first


def test_checkpoint_round_trip_in_a_fresh_process(model, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(make_model_file(CONFIG, model.state_dict()), path)
    users = torch.tensor([0, 3, 6])
    expected = model.encode_users(users)
    torch.testing.assert_close(load_two_tower(str(path)).encode_users(users), expected)
    code = (
        "import torch; from recsys_kedro.models.two_tower import load_two_tower; "
        f"m = load_two_tower({str(path)!r}); "
        "print(m.encode_users(torch.tensor([0, 3, 6])).sum().item())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert float(out.stdout.strip().splitlines()[-1]) == pytest.approx(
        expected.sum().item(), abs=1e-5
    )


def test_model_from_file_rejects_foreign_dicts():
    with pytest.raises(ValueError, match="expected a 'recsys_kedro.two_tower/v1' model file"):
        model_from_file({"state_dict": {}})


# ----------------------------------------------------------------- side features in the towers

SIDE = TwoTowerConfig(
    num_users=7,
    num_items=11,
    embedding_dim=8,
    layer_sizes=(16, 4),
    user_side=(("segment", 3, 1),),
    item_side=(("category", 4, 1), ("tags", 5, 3)),
    item_dense=2,
)


def _side_tables(seed: int = 0) -> dict:
    rng = torch.Generator().manual_seed(seed)
    tags = torch.randint(0, 5, (11, 3), generator=rng)
    tags[::2, 2] = -1  # bags of two for half the items
    known = torch.ones(11)
    known[10] = 0.0  # item 10: never in training
    return {
        "user": {"segment": torch.randint(0, 3, (7, 1), generator=rng).tolist()},
        "item": {
            "category": torch.randint(0, 4, (11, 1), generator=rng).tolist(),
            "tags": tags.tolist(),
        },
        "user_dense": [[]] * 7,
        "item_dense": torch.randn(11, 2, generator=rng).tolist(),
        "item_known": known.tolist(),
    }


@pytest.fixture
def side_model():
    torch.manual_seed(0)
    model = build_two_tower(SIDE, device="cpu", negatives=negative_features(2))
    model.set_side_tables(_side_tables())
    return model


def test_side_features_feed_the_towers(side_model):
    users, items = torch.tensor([2, 5, 0]), torch.tensor([9, 1, 10])
    layout = BatchLayout(sparse=("user_idx", "item_idx"), sampled=(("neg_item_idx_0", 11),
                         ("neg_item_idx_1", 11)))  # fmt: skip
    kjt = layout.to_batch({"user_idx": users, "item_idx": items, "label": torch.zeros(3)})
    query, candidate, negatives = side_model(kjt.sparse_features)
    assert negatives.shape == (6, 4)
    side_model.eval()
    torch.testing.assert_close(side_model.encode_users(users), query)
    torch.testing.assert_close(side_model.encode_items(items), candidate)
    # An item's attributes move its embedding; an unseen item's id embedding does not.
    before = side_model.encode_items(torch.tensor([10, 3]))
    side_model.ebc.embedding_bags["t_item"].weight.data[[10, 3]] += 1.0
    after = side_model.encode_items(torch.tensor([10, 3]))
    torch.testing.assert_close(after[0], before[0])
    assert not torch.allclose(after[1], before[1])
    side_model.item_dense[3] += 1.0
    assert not torch.allclose(side_model.encode_items(torch.tensor([3]))[0], after[1])


def test_side_tables_travel_in_the_model_file(side_model):
    side_model.eval()
    loaded = model_from_file(make_model_file(SIDE, build_and_copy(side_model)))
    items = torch.arange(11)
    torch.testing.assert_close(loaded.encode_items(items), side_model.encode_items(items))
    torch.testing.assert_close(loaded.encode_users(torch.arange(7)), side_model.encode_users(
        torch.arange(7)))  # fmt: skip


def build_and_copy(model) -> dict:
    """The state dict of ``model`` without the negatives (a saved model has none)."""
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_side_config_and_tables_are_checked():
    with pytest.raises(ValueError, match="item_side needs distinct names"):
        TwoTowerConfig(num_users=2, num_items=2, item_side=(("a", 3, 1), ("a", 3, 1)))
    with pytest.raises(ValueError, match="item_id_dropout"):
        TwoTowerConfig(num_users=2, num_items=2, item_id_dropout=1.0)
    model = build_two_tower(SIDE, device="cpu")
    tables = _side_tables()
    tables["item"]["category"][0] = [4]  # the table has rows 0..3
    with pytest.raises(AssertionError, match="outside"):
        model.set_side_tables(tables)
    tables = _side_tables()
    tables["item_dense"] = tables["item_dense"][:5]
    with pytest.raises(AssertionError, match="item_dense"):
        model.set_side_tables(tables)


def test_a_new_item_is_placed_by_its_attributes():
    """Users like the items of one of four categories; items 36-39 (one per category) are
    never in training. After training with side features, each new item ranks above the
    catalogue's middle for the users of its category, and far above it on average; with
    ids only it is a random vector."""
    n_users, n_items, n_cat = 80, 40, 4
    category = torch.arange(n_items) % n_cat
    taste = torch.arange(n_users) % n_cat
    known = torch.ones(n_items)
    known[36:] = 0.0
    config = TwoTowerConfig(
        num_users=n_users, num_items=n_items, embedding_dim=8, layer_sizes=(16, 8),
        item_side=(("category", n_cat, 1),), item_id_dropout=0.3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_two_tower(config, device="cpu")
    model.set_side_tables({
        "user": {}, "item": {"category": category.unsqueeze(1).tolist()},
        "user_dense": [[]] * n_users, "item_dense": [[]] * n_items, "item_known": known.tolist(),
    })  # fmt: skip
    task = TwoTowerTrainTask(model, temperature=0.1)
    optimizer = torch.optim.Adam(task.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(1)
    for _ in range(150):
        users = torch.randint(0, n_users, (64,), generator=gen)
        # a liked, known item of the user's category
        items = taste[users] + n_cat * torch.randint(0, 9, (64,), generator=gen)
        loss, _ = task(make_batch(users, items, torch.ones(64)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    scores = model.encode_users(torch.arange(n_users)) @ model.encode_items(
        torch.arange(n_items)).T  # fmt: skip
    ranks = (scores.unsqueeze(1) > scores.unsqueeze(2)).sum(2) + 1  # (users, items): 1 = best
    for item in range(36, 40):
        fans = taste == category[item]
        mean_rank = ranks[fans, item].float().mean().item()
        assert mean_rank <= n_items / n_cat, (item, mean_rank)  # among its category's items
        assert ranks[fans, item].max().item() <= n_items / 2  # above the middle for every fan
