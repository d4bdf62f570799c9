"""Labels through training: the Trainer hands each row's label to the loss, label dropout trains the
null class at its rate, a conditional run resumes exactly, and a small trained model follows its
labels; the noisy classifier learns the exact p_t(y | x) of a mixture."""

import pytest
import torch
from torch.utils.data import Dataset

import scoresde as ss
from scoresde.data import TensorData
from scoresde.training import DSMLoss, NoisyClassifier, Trainer, fit_noisy_classifier

SDE = ss.VPSDE()


class Spy:
    """A DSM loss that records what the Trainer hands it."""

    shardable = True

    def __init__(self, **kw):
        self.inner, self.seen = DSMLoss(SDE, **kw), []

    def __call__(self, model, x0, generator, *, shard=None, y=None):
        self.seen.append((x0.clone(), None if y is None else y.clone()))
        return self.inner(model, x0, generator, shard=shard, y=y)


def _labelled(n=64, classes=4):
    y = torch.arange(n) % classes
    x = torch.stack([y.float(), torch.randn(n, generator=torch.Generator().manual_seed(0))], 1)
    return TensorData(x, labels=y)


def _model(num_classes=4, seed=0):
    torch.manual_seed(seed)
    return ss.ScoreModel(ss.MLP(2, 16, 1, num_classes=num_classes), SDE)


def test_the_trainer_hands_each_rows_label_to_the_loss():
    spy = Spy()
    Trainer(_model(), spy, _labelled(), None, steps=5, batch_size=16, progress=False).fit()
    assert len(spy.seen) == 5
    for x0, y in spy.seen:
        assert y.dtype == torch.long and torch.equal(y, x0[:, 0].long())  # x's first coordinate is its label


def test_an_unconditional_model_ignores_the_datas_labels():
    spy = Spy()
    torch.manual_seed(0)
    model = ss.ScoreModel(ss.MLP(2, 16, 1), SDE)
    a = Trainer(model, spy, _labelled(), None, steps=5, batch_size=16, progress=False).fit()
    assert all(y is None for _, y in spy.seen)
    torch.manual_seed(0)
    plain = ss.ScoreModel(ss.MLP(2, 16, 1), SDE)
    b = Trainer(plain, DSMLoss(SDE), _labelled().data, None, steps=5, batch_size=16, progress=False).fit()
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)  # exactly as without labels


class RecordLabels(torch.nn.Module):
    num_classes = 4

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.y = None

    def forward(self, x, t, y=None):
        self.y = y
        return x * self.w


def test_label_dropout_replaces_labels_by_the_null_class_at_its_rate():
    n, p = 20_000, 0.3
    y = torch.arange(n) % 4
    x0 = torch.randn(n, 2)
    spy = RecordLabels()
    DSMLoss(SDE, label_dropout=p)(spy, x0, torch.Generator().manual_seed(0), y=y)
    dropped = spy.y == 4
    rate = float(dropped.double().mean())
    assert abs(rate - p) < 4 * (p * (1 - p) / n) ** 0.5, rate
    assert torch.equal(spy.y[~dropped], y[~dropped])  # the others keep their labels
    # shards of a data-parallel step drop exactly the rows one process would
    part = RecordLabels()
    DSMLoss(SDE, label_dropout=p)(part, x0[100:300], torch.Generator().manual_seed(0), shard=(100, n), y=y[100:300])
    assert torch.equal(part.y, spy.y[100:300])
    # no labels given: the loss draws exactly what it always drew
    a = DSMLoss(SDE, label_dropout=0.5)(ss.ScoreModel(ss.MLP(2, 8, 1), SDE), x0[:64], torch.Generator().manual_seed(1))
    b = DSMLoss(SDE)(ss.ScoreModel(ss.MLP(2, 8, 1), SDE), x0[:64], torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert "label_dropout" not in DSMLoss(SDE).config and DSMLoss(SDE, label_dropout=p).config["label_dropout"] == p


def test_a_conditional_run_resumes_exactly(tmp_path):
    def trainer(out):
        return Trainer(_model(), DSMLoss(SDE, label_dropout=0.25), _labelled(), out, steps=8, batch_size=16,
                       checkpoint_every=4, progress=False)

    straight = trainer(tmp_path / "a").fit()
    first = trainer(tmp_path / "b")
    first.fit(4)
    resumed = trainer(tmp_path / "b")
    assert resumed.resume() == 4
    resumed.fit()
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)


class Pairs(Dataset):
    """A plain map-style data set of (x, label) tuples."""

    def __init__(self, labels):
        self.labels_ = labels

    def __len__(self):
        return len(self.labels_)

    def __getitem__(self, i):
        return torch.tensor([float(i % 4), 0.0]), self.labels_[i]


def test_tuple_items_serve_their_labels():
    spy = Spy()
    Trainer(_model(), spy, Pairs([i % 4 for i in range(32)]), None, steps=2, batch_size=8, progress=False).fit()
    assert all(torch.equal(y, x0[:, 0].long()) for x0, y in spy.seen)
    with pytest.raises(ss.ArgumentError, match="labels must be an integer tensor"):
        Trainer(_model(), Spy(), Pairs([0.5] * 32), None, steps=1, batch_size=8, progress=False)


def test_label_errors_name_the_problem():
    with pytest.raises(ss.ArgumentError, match=r"the model is class-conditional \(num_classes=4\) but the data "
                                               r"\(TensorData\) carry no class labels"):
        Trainer(_model(), DSMLoss(SDE), TensorData(torch.randn(8, 2)), None, progress=False)
    with pytest.raises(ss.ArgumentError, match=r"labels must hold class labels in \[0, 2\], got 3"):
        Trainer(_model(num_classes=3), DSMLoss(SDE), _labelled(classes=4), None, progress=False)

    def no_y(model, x0, generator):
        return model(x0, torch.full((x0.shape[0],), 0.5)).square().sum(1)

    with pytest.raises(ss.ArgumentError, match=r"loss_fn must take the class labels as loss_fn\(model, x0, "
                                               r"generator, y=labels\)"):
        Trainer(_model(), no_y, _labelled(), None, progress=False)
    with pytest.raises(ss.ArgumentError, match="label_dropout=0.2 needs a class-conditional model"):
        DSMLoss(SDE, label_dropout=0.2)(ss.ScoreModel(ss.MLP(2, 8, 1), SDE), torch.randn(4, 2), y=torch.zeros(4).long())
    with pytest.raises(ss.ArgumentError, match=r"label_dropout must be a number in \[0, 1\)"):
        DSMLoss(SDE, label_dropout=1.0)


# ---- trained models ------------------------------------------------------------------------------
FOUR = ss.analytic.GaussianMixture(torch.tensor([[3.0, 0.0], [0.0, 3.0], [-3.0, 0.0], [0.0, -3.0]],
                                                dtype=torch.float64), 0.5, torch.tensor([1.0, 2.0, 3.0, 4.0]))


@pytest.mark.slow
def test_a_trained_conditional_model_follows_its_labels_and_keeps_an_unconditional_path():
    """600 steps of a conditional MLP on a 4-component mixture (labels = components), label dropout 0.2.
    Measured: class accuracy 0.99-1.00 at w = 1 and 3; the null class's samples have component-weight
    TV 0.04 from the true weights."""
    data = ss.MixtureDataset(FOUR, 4000, seed=1)
    torch.manual_seed(0)
    model = ss.ScoreModel(ss.MLP(2, 64, 2, num_classes=4), SDE, data_std=2.0)
    net = Trainer(model, DSMLoss(SDE, label_dropout=0.2), data, None, steps=600, batch_size=256, lr=3e-3,
                  progress=False).fit().ema.model.eval()
    labels = torch.arange(4).repeat_interleave(250)
    for w in (1.0, 3.0):
        x = ss.sample(net, SDE, (1000, 2), sampler="dpm_solver", steps=25, seed=0, cond=labels, guidance=w).x
        acc = float((ss.metrics.assign(x.double(), FOUR) == labels).double().mean())
        assert acc > 0.95, (w, acc)
    x = ss.sample(net, SDE, (2000, 2), sampler="dpm_solver", steps=25, seed=1).x  # y=None: the null class
    assert float(ss.metrics.mode_weight_tv(x.double(), FOUR)) < 0.1


@pytest.mark.slow
def test_the_noisy_classifier_learns_the_exact_posterior_and_guides_to_its_class():
    """400 steps: the mean KL(exact p_t(y | x) || classifier) is below 0.05 nats at every t tried
    (measured 0.004-0.02), and classifier guidance of the exact unconditional score puts > 90 % of the
    samples in the class asked for."""
    data = ss.MixtureDataset(FOUR, 4000, seed=1)
    torch.manual_seed(0)
    clf = fit_noisy_classifier(NoisyClassifier(ss.MLP(2, 64, 2, out_dim=4), SDE, 4, data_std=2.0), data, steps=400)
    gen = torch.Generator().manual_seed(5)
    for t in (0.05, 0.3, 0.6, 0.9):
        x = FOUR.sample(2000, t=t, sde=SDE, generator=gen)
        exact = FOUR.component_posterior(x, t, SDE)
        with torch.no_grad():
            log_q = torch.log_softmax(clf(x.float(), torch.full((2000,), t)), -1).double()
        kl = float((exact * (exact.clamp_min(1e-300).log() - log_q)).sum(-1).mean())
        assert kl < 0.05, (t, kl)
    y = torch.full((1000,), 2)
    exact_score = FOUR.score_fn(SDE)
    guided = ss.classifier_guidance(lambda x, t: exact_score(x.double(), t.double()).float(), clf.log_likelihood(y), 1.0)
    x = ss.sample(guided, SDE, (1000, 2), sampler="euler_maruyama", steps=300, seed=0).x
    assert float((ss.metrics.assign(x.double(), FOUR) == 2).double().mean()) > 0.9


def test_noisy_classifier_errors_are_named():
    clf = NoisyClassifier(ss.MLP(2, 8, 1, out_dim=4), SDE, 4)
    with pytest.raises(ss.ArgumentError, match=r"data \(TensorData\) carry no class labels"):
        fit_noisy_classifier(clf, TensorData(torch.randn(8, 2)), steps=1)
    with pytest.raises(ss.ArgumentError, match=r"labels must hold class labels in \[0, 3\], got 5"):
        fit_noisy_classifier(clf, TensorData(torch.randn(8, 2), labels=[5] * 8), steps=1)
    with pytest.raises(ss.ArgumentError, match=r"labels must hold class labels in \[0, 3\], got 4"):
        clf.log_likelihood(torch.tensor([0, 4]))
    with pytest.raises(ss.ArgumentError, match=r"net must return logits of shape \(3, 4\), got \(3, 2\)"):
        NoisyClassifier(ss.MLP(2, 8, 1), SDE, 4)(torch.randn(3, 2), torch.full((3,), 0.5))
    with pytest.raises(ss.ArgumentError, match="sde must be a linear SDE"):
        NoisyClassifier(ss.MLP(2, 8, 1), object(), 4)
