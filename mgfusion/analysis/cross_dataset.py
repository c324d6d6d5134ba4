"""Cross-dataset consistency of SC/EF profiles (paper §A.2, Table 5 vs Table 9): do the same encoders, profiled
under the same metric settings on two datasets, rank their strides the same way and lead to the same fusion?

For every encoder in both profiles and every metric: the rank correlation of its per-stride means across the two
datasets and whether the best stride agrees; across encoders: whether the order by mean SC / peak EF agrees; and
the recommendation (master, auxiliary, stride) of each profile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mgfusion.profiling.selection import Recommendation, argmax_stride

from .configs import ABSENT, flatten_config, format_value
from .errors import AnalysisError
from .profiles import Profile
from .render import csv_text, fmt, markdown_table
from .stats import RankCorrelation, rank_correlation

__all__ = ["CrossDataset", "compare_datasets"]


@dataclass
class CrossDataset:
    """Two profiles of the same encoders on two datasets (see the module docstring)."""

    a: Profile
    b: Profile
    encoders: list[str]
    metrics: list[str]
    per_stride: dict[tuple[str, str], RankCorrelation]
    peak: dict[tuple[str, str], tuple[int, int]]
    across_encoders: dict[str, RankCorrelation]
    orders: dict[str, tuple[list[str], list[str]]]
    recommendations: tuple[Recommendation | None, Recommendation | None]
    only_in: dict[str, list[str]] = field(default_factory=dict)
    recommendation_errors: tuple[str | None, str | None] = (None, None)

    @property
    def agrees(self) -> dict[str, bool | None]:
        """Whether the two recommendations agree on ``master``, ``auxiliary``, ``stride`` (None without both)."""
        ra, rb = self.recommendations
        if ra is None or rb is None:
            return {"master": None, "auxiliary": None, "stride": None}
        return {k: getattr(ra, k) == getattr(rb, k) for k in ("master", "auxiliary", "stride")}

    def markdown(self) -> str:
        """Summary, per-encoder correlations, encoder orders, recommendations and the profiles side by side."""
        la, lb = "A", "B"
        out = ["# Cross-dataset consistency of SC/EF profiles (paper §A.2)\n\n",
               f"- {la}: `{self.a.folder}` ({self.a.describe_source()})\n",
               f"- {lb}: `{self.b.folder}` ({self.b.describe_source()})\n\n"]
        ra, rb = self.recommendations
        agree = self.agrees
        head = ["", "master", "auxiliary", "stride"]
        rows = [[la, *((ra.master, ra.auxiliary, str(ra.stride)) if ra else ("–",) * 3)],
                [lb, *((rb.master, rb.auxiliary, str(rb.stride)) if rb else ("–",) * 3)],
                ["agree", *[_yes(agree[k]) for k in ("master", "auxiliary", "stride")]]]
        out.append("## Recommendation\n\n" + markdown_table(head, rows))
        for label, why in zip((la, lb), self.recommendation_errors):
            if why:
                out.append(f"\nNo recommendation for {label}: {why}\n")
        out.append("\n## Per-stride ranking of each encoder (A vs B)\n\n")
        head = ["encoder", "metric", "Spearman ρ", "Kendall τ", "n", f"best OS {la}", f"best OS {lb}", "same best"]
        rows = []
        for e in self.encoders:
            for m in self.metrics:
                c, (pa, pb) = self.per_stride[(e, m)], self.peak[(e, m)]
                rows.append([e, m, fmt(c.spearman, 2), fmt(c.kendall, 2), str(c.n), str(pa), str(pb),
                             _yes(pa == pb)])
        out.append(markdown_table(head, rows, right=[False, False, True, True, True, True, True, False]))
        n = max((c.n for c in self.per_stride.values()), default=0)
        if n and n < 5:
            out.append(f"\nWith {n} strides ρ describes the ranking; it is not a test (p-values in the CSV). Best OS: "
                       "the stride with the highest mean.\n")
        out.append("\n## Encoder order across datasets\n\n")
        rows = [[f"{'peak' if m == 'EF' else 'mean'} {m}", " > ".join(self.orders[m][0]), " > ".join(self.orders[m][1]),
                 self.across_encoders[m].sentence(2)] for m in self.metrics]
        out.append(markdown_table(["order by", la, lb, "rank correlation over encoders"], rows))
        for name, encs in self.only_in.items():
            if encs:
                out.append(f"\nOnly in {name} (left out): {', '.join(encs)}\n")
        out.append("\n## Profiles side by side\n\n" + self._side_by_side())
        return "".join(out)

    def _side_by_side(self) -> str:
        strides = sorted({s for e in self.encoders for s in self.a.means(e, self.metrics[0])})
        head = ["encoder", "dataset", *[f"{m} OS{s}" for m in self.metrics for s in strides]]
        rows = []
        for e in self.encoders:
            for label, p in (("A", self.a), ("B", self.b)):
                means = {m: p.means(e, m) for m in self.metrics}
                rows.append([e, label, *[fmt(means[m].get(s), 2) for m in self.metrics for s in strides]])
        return markdown_table(head, rows, right=[False, False] + [True] * (len(head) - 2))

    def csv(self) -> str:
        """One row per (encoder, metric): correlation fields and the best stride on each dataset."""
        fields = list(RankCorrelation(n=0).to_dict())
        header = ["encoder", "metric", "profile_a", "profile_b", "best_stride_a", "best_stride_b", *fields]
        return csv_text(header, [{"encoder": e, "metric": m, "profile_a": self.a.folder, "profile_b": self.b.folder,
                                  "best_stride_a": self.peak[(e, m)][0], "best_stride_b": self.peak[(e, m)][1],
                                  **self.per_stride[(e, m)].to_dict()}
                                 for e in self.encoders for m in self.metrics])


def _yes(v: bool | None) -> str:
    return "–" if v is None else ("yes" if v else "**no**")


def _check_comparable(a: Profile, b: Profile, encoders: Sequence[str]) -> None:
    fa, fb = flatten_config(a.compared("metrics")), flatten_config(b.compared("metrics"))
    diff = [k for k in sorted(set(fa) | set(fb)) if fa.get(k, ABSENT) != fb.get(k, ABSENT)]
    if diff:
        shown = ", ".join(f"{k}: {format_value(fa.get(k, ABSENT))} vs {format_value(fb.get(k, ABSENT))}"
                          for k in diff[:6])
        raise AnalysisError(f"{a.folder} and {b.folder} were profiled with other metric settings ({shown}); a "
                            "cross-dataset comparison needs the same settings on both datasets")
    for e in encoders:
        ea, eb = a.compared("encoders").get(e), b.compared("encoders").get(e)
        if ea != eb:
            raise AnalysisError(f"encoder {e} differs between {a.folder} and {b.folder} (build or weights: {ea} vs "
                                f"{eb}); compare the same encoders")
    if a.compared("images") == b.compared("images"):
        raise AnalysisError(f"{a.folder} and {b.folder} profiled the same images; a cross-dataset comparison needs "
                            "two datasets")


def compare_datasets(a: Profile, b: Profile, *, metrics: Sequence[str] = ("SC", "EF")) -> CrossDataset:
    """Compare two profiles of the same encoders on two datasets (see the module docstring)."""
    encoders = [e for e in a.encoders if b.has(e)]
    if not encoders:
        raise AnalysisError(f"{a.folder} ({', '.join(a.encoders)}) and {b.folder} ({', '.join(b.encoders)}) "
                            "share no encoder")
    _check_comparable(a, b, encoders)
    per_stride, peak = {}, {}
    for e in encoders:
        for m in metrics:
            ma, mb = a.means(e, m), b.means(e, m)
            common = sorted(set(ma) & set(mb))
            if not common:
                raise AnalysisError(f"encoder {e}: the profiles share no stride ({sorted(ma)} vs {sorted(mb)})")
            per_stride[(e, m)] = rank_correlation([ma[s] for s in common], [mb[s] for s in common])
            peak[(e, m)] = (argmax_stride({s: ma[s] for s in common}), argmax_stride({s: mb[s] for s in common}))
    orders = {m: (a.encoder_order(m, encoders), b.encoder_order(m, encoders)) for m in metrics}
    across = {}
    for m in metrics:
        sa, sb = a.encoder_scores(m, encoders), b.encoder_scores(m, encoders)
        across[m] = rank_correlation([sa[e] for e in encoders], [sb[e] for e in encoders])
    (rec_a, why_a), (rec_b, why_b) = a.try_recommendation(), b.try_recommendation()
    return CrossDataset(a=a, b=b, encoders=encoders, metrics=list(metrics), per_stride=per_stride, peak=peak,
                        across_encoders=across, orders=orders, recommendations=(rec_a, rec_b),
                        recommendation_errors=(why_a, why_b),
                        only_in={"A": [e for e in a.encoders if not b.has(e)],
                                 "B": [e for e in b.encoders if not a.has(e)]})
