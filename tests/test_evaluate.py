"""The two fusions of evaluation, checked against numbers computed by hand from per-view logits."""

import math
import random

import pytest
import torch
import torch.nn as nn

from clipadapt.recipes import load_recipe
from clipadapt.engine.evaluate import eval_options, evaluate

VIDEOS, VIEWS, CLASSES = 16, 3, 6
rng = random.Random(0)
# LOGITS[head][video][view] = a list of CLASSES numbers
LOGITS = {head: [[[rng.gauss(0, 2) for _ in range(CLASSES)] for _ in range(VIEWS)] for _ in range(VIDEOS)]
          for head in ("vc", "cmc", "contrastive")}
LABELS = [rng.randrange(CLASSES) for _ in range(VIDEOS)]


class TableModel(nn.Module):
    """Returns the logits of `LOGITS` for the view whose id is written in its first pixel."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.table = {head: torch.tensor(values).reshape(VIDEOS * VIEWS, CLASSES) for head, values in LOGITS.items()}

    def forward(self, video):
        ids = video[:, 0, 0, 0, 0].long()  # (B·V,)
        out = {head: table[ids] for head, table in self.table.items()}
        out["fused"] = torch.full_like(out["vc"], float("nan"))  # a model's own fusion is not used
        return out


def loader(batch=5):
    ids = torch.arange(VIDEOS * VIEWS, dtype=torch.float32).reshape(VIDEOS, VIEWS)
    video = ids[:, :, None, None, None, None].expand(VIDEOS, VIEWS, 2, 3, 1, 1).clone()  # (B, V, T, 3, H, W)
    labels = torch.tensor(LABELS)
    return [{"video": video[i:i + batch], "label": labels[i:i + batch], "index": torch.arange(i, min(i + batch, VIDEOS))}
            for i in range(0, VIDEOS, batch)]


# ---- the reference, in plain Python -----------------------------------------------------------


def softmax(row):
    top = max(row)
    exps = [math.exp(x - top) for x in row]
    return [e / sum(exps) for e in exps]


def fused_views(views, how):
    if how == "mean_prob":
        probs = [softmax(v) for v in views]
        return [sum(p[c] for p in probs) / len(probs) for c in range(CLASSES)]
    if how == "mean_logit":
        return softmax([sum(v[c] for v in views) / len(views) for c in range(CLASSES)])
    probs = [softmax(v) for v in views]
    return [max(p[c] for p in probs) for c in range(CLASSES)]


def accuracy(scores, k):
    hits = [LABELS[i] in sorted(range(CLASSES), key=lambda c: -row[c])[:k] for i, row in enumerate(scores)]
    return 100.0 * sum(hits) / len(hits)


def expected(how, fuse):
    per_head = {head: [fused_views(LOGITS[head][i], how) for i in range(VIDEOS)] for head in LOGITS}
    fused = [[sum(per_head[h][i][c] for h in fuse) / len(fuse) for c in range(CLASSES)] for i in range(VIDEOS)]
    metrics = {f"{head}/top{k}": accuracy(scores, k) for head, scores in per_head.items() for k in (1, 5)}
    metrics.update({f"fused/top{k}": accuracy(fused, k) for k in (1, 5)})
    return metrics


# ---- tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["mean_prob", "mean_logit", "max"])
def test_each_view_fusion_and_the_head_fusion_give_the_numbers_computed_by_hand(how):
    metrics = evaluate(TableModel(), loader(), view_fusion=how)
    want = expected(how, ["vc", "cmc"])
    assert metrics["num_videos"] == VIDEOS
    for key, value in want.items():
        assert metrics[key] == pytest.approx(value), key


def test_the_three_view_fusions_rank_differently_on_this_table():
    """Guards the test above: it could not tell the fusions apart if they agreed here."""
    fused = {how: [fused_views(LOGITS["vc"][i], how) for i in range(VIDEOS)] for how in ("mean_prob", "mean_logit", "max")}
    top1 = {how: [max(range(CLASSES), key=lambda c: row[c]) for row in rows] for how, rows in fused.items()}
    assert top1["mean_prob"] != top1["mean_logit"] and top1["mean_prob"] != top1["max"] and top1["max"] != top1["mean_logit"]


def test_fuse_heads_chooses_the_heads_in_the_fusion():
    metrics = evaluate(TableModel(), loader(), fuse_heads=["vc", "contrastive"])
    want = expected("mean_prob", ["vc", "contrastive"])
    assert metrics["fused/top1"] == pytest.approx(want["fused/top1"])
    assert want["fused/top1"] != expected("mean_prob", ["vc", "cmc"])["fused/top1"]  # the choice matters here
    only_vc = evaluate(TableModel(), loader(), fuse_heads=["vc"])
    assert only_vc["fused/top1"] == only_vc["vc/top1"] and only_vc["fused/top5"] == only_vc["vc/top5"]


def test_no_fused_entry_when_none_of_the_fused_heads_is_present():
    metrics = evaluate(TableModel(), loader(), fuse_heads=["cmlm"])
    assert "fused/top1" not in metrics and "vc/top1" in metrics


def test_an_unknown_view_fusion_is_refused_with_the_accepted_ones():
    with pytest.raises(ValueError, match=r"view_fusion 'median' is not one of \('mean_prob', 'mean_logit', 'max'\)"):
        evaluate(TableModel(), loader(), view_fusion="median")


def test_a_recipes_eval_section_sets_both_fusions():
    recipe = load_recipe("quickstart", ["eval.view_fusion=max", "eval.fuse_heads=[vc]"])
    options = eval_options(recipe)
    assert options["view_fusion"] == "max" and options["fuse_heads"] == ["vc"]
    assert eval_options(load_recipe("quickstart"))["fuse_heads"] == ["vc", "cmc"]


def test_flop_reports_count_the_heads_that_run_per_view_at_test_time():
    """VC: CLIP's ln_post (5 per element) and a W×C linear layer; CMC: an E×C product."""
    from clipadapt.analysis.flops import flops_report
    from clipadapt.data.recipe import recipe_classnames
    from clipadapt.models import build_from_recipe

    recipe = load_recipe("quickstart")
    model = build_from_recipe(recipe, recipe_classnames(recipe))
    report = flops_report(model, num_frames=recipe.data.frames, num_classes=model.num_classes)
    per_view = {c.name: c.flops_per_view for c in report.components}
    width, embed, classes = model.visual_width, model.embed_dim, model.num_classes
    assert per_view["heads.vc"] == 5 * width + width * classes
    assert per_view["heads.cmc"] == embed * classes
    assert report.flops_per_view == sum(per_view.values())
