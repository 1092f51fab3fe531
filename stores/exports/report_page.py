"""The report page: one dataset version as a static HTML page plus thumbnails, for people to look at.

`write_report` writes `<output>/index.html` and `<output>/thumbs/<asset_id>.jpg`. The page needs no
server and nothing from the network (style, script and SVG charts are inline; thumbnails are
relative files), so it opens from disk, from a zip, or from any static host. It shows:
- the version: dataset, recipe, config hash, licence, sources, rows per table;
- charts: verification pass rate per answer type and per verifier, the pass-rate histogram of
  every policy (difficulty is always for a policy), rejects by reason with a few examples each;
- one card per sample (stores/exports/facts.py `samples`): thumbnail, question and choices, answer,
  best CoT, verdicts, difficulty per policy (policy id, method, pass rate with and without the
  image, selected), reject reasons; filters by answer type, source, and difficulty for a chosen policy.
At most `max_samples` cards (the first by question id, a hash order, so an unbiased slice); the page
says when it shows fewer than the version has. The charts always cover the whole version.
"""

import json
from dataclasses import dataclass
from html import escape
from pathlib import Path

from PIL import Image

from schemas.errors import ExportError
from stores.exports import facts
from stores.exports.report_assets import CSS, JS
from stores.exports.svg_charts import bar_chart, histogram_chart

THUMBNAIL_PIXELS = 240
# Difficulty buckets of a pass rate, in filter order: slug -> label.
DIFFICULTY_BUCKETS = {"never": "never solved (0)", "hard": "hard (0 < p < 0.5)", "easy": "easy (0.5 ≤ p < 1)",
                      "always": "always solved (1)", "unscored": "not scored"}


@dataclass(frozen=True)
class ReportPage:
    path: Path       # index.html
    n_samples: int   # samples in the version
    n_shown: int     # cards on the page (≤ max_samples)


def difficulty_bucket(pass_rate: float | None) -> str:
    """The filter bucket of a pass rate.

    >>> [difficulty_bucket(p) for p in (None, 0.0, 0.25, 0.5, 0.99, 1.0)]
    ['unscored', 'never', 'hard', 'easy', 'easy', 'always']
    """
    if pass_rate is None:
        return "unscored"
    if pass_rate <= 0:
        return "never"
    if pass_rate >= 1:
        return "always"
    return "hard" if pass_rate < 0.5 else "easy"


def policy_buckets(difficulty_rows: list[dict] | None) -> dict[str, str]:
    """policy id -> bucket, from a sample's difficulty rows (group statistics first, then any scored method).

    >>> policy_buckets([{"policy_id": "p", "method": "mcts", "pass_rate": None},
    ...                 {"policy_id": "p", "method": "group_stats", "pass_rate": 0.5}])
    {'p': 'easy'}
    """
    out: dict[str, str] = {}
    ordered = sorted(difficulty_rows or [], key=lambda row: (row["method"] != "group_stats", row["pass_rate"] is None))
    for row in ordered:
        out.setdefault(row["policy_id"], difficulty_bucket(row["pass_rate"]))
    return out


def write_report(lake, output: Path | None, *, version: int | None = None, max_samples: int = 500,
                 default_root: Path | None = None) -> ReportPage:
    """Write the page for `version` (latest when None) into `output` (default: `default_root/<dataset>-v<n>`)."""
    if max_samples < 1:
        raise ExportError(f"max_samples must be at least 1, got {max_samples}")
    version = facts.resolve_version(lake, version)
    dataset = lake.root.name
    if output is None:
        if default_root is None:
            raise ExportError("give an output folder (--output DIR)")
        output = Path(default_root) / f"{dataset}-v{version}"
    output = Path(output)
    (output / "thumbs").mkdir(parents=True, exist_ok=True)
    n_samples = facts.count_rows(lake, version, "questions")
    samples = facts.samples(lake, version, limit=max_samples).to_pylist()
    for sample in samples:
        sample["thumbnail"] = _thumbnail(lake.root, sample, output / "thumbs")
    context = {
        "dataset": dataset, "version": version, "n_samples": n_samples, "samples": samples, "max_samples": max_samples,
        "lineage": facts.lineage(lake, version), "sources": facts.sources(lake, version),
        "verification": facts.verification(lake, version), "difficulty": facts.difficulty_histograms(lake, version),
        "rejects": facts.rejects_by_reason(lake, version, examples=3),
        "counts": facts.table_counts(lake, version, ("assets", "questions", "cots", "verdicts", "rollouts", "difficulty", "rejects")),
    }
    path = output / "index.html"
    path.write_text(render(context), encoding="utf-8")
    return ReportPage(path, n_samples, len(samples))


def _thumbnail(dataset_root: Path, sample: dict, folder: Path) -> str | None:
    """Relative path of the sample's thumbnail (made once per asset), or None when it has no image."""
    if not sample["image_uri"]:
        return None
    name = f"{sample['asset_id']}.jpg"
    target = folder / name
    if not target.exists():
        source = dataset_root / sample["image_uri"]
        try:
            with Image.open(source) as image:
                image = image.convert("RGB")
                image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
                image.save(target, "JPEG", quality=85)
        except (OSError, ValueError) as error:
            raise ExportError(f"cannot make the thumbnail of {sample['question_id']} from {source}: {error}. "
                              f"Is the dataset's media/ folder complete?") from None
    return f"thumbs/{name}"


# ---- rendering -------------------------------------------------------------------------------------

def render(context: dict) -> str:
    lineage = context["lineage"]
    title = f"{context['dataset']} · version {context['version']}"
    return "\n".join([
        "<!doctype html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # no favicon request: the page fetches nothing
        f"<title>{escape(title)} · thinkmill</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        "<header>", f"<h1>{escape(title)}</h1>",
        f'<div class="meta">recipe <code>{escape(lineage["recipe"])}</code> · run <code>{escape(lineage["run_id"])}</code> · '
        f'config hash <code>{escape(lineage["config_hash"][:12])}</code> · licence {escape(lineage["license"] or "not stated")} · '
        f'{_counts_text(context["counts"])}</div>',
        _cap_note(context),
        '<nav class="meta"><a href="#charts">charts</a> · <a href="#rejects">rejects by reason</a> · '
        '<a href="#samples">samples</a></nav>',
        "</header>", "<main>",
        _charts_section(context), _rejects_section(context["rejects"]), _samples_section(context),
        "</main>", f"<script>{JS}</script>", "</body>", "</html>"])


def _counts_text(counts: dict) -> str:
    return " · ".join(f"{n} {escape(name)}" for name, n in counts.items())


def _cap_note(context: dict) -> str:
    if len(context["samples"]) >= context["n_samples"]:
        return ""
    return (f'<p class="cap-note" id="cap-note">This page shows the first {len(context["samples"])} of '
            f'{context["n_samples"]} samples (by question id), capped by <code>--max-samples {context["max_samples"]}</code>. '
            f'Charts and reject counts cover all {context["n_samples"]}.</p>')


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _charts_section(context: dict) -> str:
    verification = context["verification"]
    charts = []
    for key, label in (("by_answer_type", "answer_type"), ("by_verifier", "verifier")):
        rows = [(row[label], row["pass_rate"] or 0.0, f"{_percent(row['pass_rate'])} of {row['n']}") for row in verification[key]]
        if rows:
            charts.append(bar_chart(rows, max_value=1.0, title=f"Verification pass rate by {label.replace('_', ' ')}"))
    for row in context["difficulty"]:
        charts.append(histogram_chart(row["counts"], row["bin_edges"], title=row["policy_id"],
                                      subtitle=f"{row['method']}: questions by pass rate ({row['n_scored']} scored)"))
    if not charts:
        charts.append("<p>No verdicts or difficulty rows in this version.</p>")
    summary = (f"{verification['n_passed']} of {verification['n']} verdicts passed ({_percent(verification['pass_rate'])}). "
               if verification["n"] else "")
    sources = ", ".join(f"{row['n']} {escape(row['kind'])}s from {escape(row['source'])}" for row in context["sources"])
    return (f'<section id="charts"><h2>Verification and difficulty</h2><p>{summary}Sources: {sources or "none"}. '
            f'Difficulty is for a policy: each histogram counts questions by the share of that policy\'s rollouts '
            f'(with the image) judged correct.</p><div class="charts">{"".join(charts)}</div></section>')


def _rejects_section(rejects: list[dict]) -> str:
    if not rejects:
        return '<section id="rejects"><h2>Rejects by reason</h2><p>No stage rejected anything.</p></section>'
    chart = bar_chart([(row["reason"], row["n"], str(row["n"])) for row in rejects], max_value=max(row["n"] for row in rejects),
                      title="Rejects by reason", css_class="rejects-chart")
    rows = []
    for row in rejects:
        examples = "<br>".join(f"<code>{escape(e['subject_id'])}</code>: {escape(e['detail'])}" for e in row["examples"])
        rows.append(f'<tr class="reject-reason" data-reason="{escape(row["reason"])}"><td><code>{escape(row["reason"])}</code></td>'
                    f'<td class="num">{row["n"]}</td><td class="examples">{examples}</td></tr>')
    return (f'<section id="rejects"><h2>Rejects by reason</h2><div class="charts">{chart}</div>'
            f'<table><thead><tr><th>reason</th><th>rows</th><th>examples</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f'</section>')


def _options(values: list[tuple[str, str]], *, all_label: str | None) -> str:
    options = [f'<option value="">{escape(all_label)}</option>'] if all_label else []
    options += [f'<option value="{escape(value)}">{escape(label)}</option>' for value, label in values]
    return "".join(options)


def _samples_section(context: dict) -> str:
    samples = context["samples"]
    answer_types = sorted({s["answer_type"] for s in samples})
    sources = sorted({s["source"] for s in samples if s["source"]})
    policies = [p["policy_id"] for p in context["lineage"]["policies"]]
    no_policy = "" if policies else " disabled"
    filters = (
        '<div class="filters">'
        f'<label>answer type<select id="filter-answer-type">{_options([(t, t) for t in answer_types], all_label="all")}</select></label>'
        f'<label>source<select id="filter-source">{_options([(s, s) for s in sources], all_label="all")}</select></label>'
        f'<label>difficulty for policy<select id="filter-policy"{no_policy}>{_options([(p, p) for p in policies], all_label=None)}</select></label>'
        f'<label>difficulty<select id="filter-difficulty"{no_policy}>'
        f'{_options(list(DIFFICULTY_BUCKETS.items()), all_label="any")}</select></label>'
        f'<div id="shown-summary">showing <span id="shown-count">{len(samples)}</span> of {len(samples)} samples on this page</div>'
        '</div>')
    cards = "".join(_card(sample) for sample in samples)
    return (f'<section id="samples"><h2>Samples</h2>{filters}<p id="no-match" hidden>No sample on this page matches these filters.</p>'
            f'</section><div class="grid" id="sample-grid">{cards}</div>')


def _card(sample: dict) -> str:
    buckets = policy_buckets(sample["difficulty"])
    attributes = (f'data-question-id="{escape(sample["question_id"])}" data-answer-type="{escape(sample["answer_type"])}" '
                  f'data-source="{escape(sample["source"] or "")}" data-difficulty="{escape(json.dumps(buckets))}"')
    image = (f'<img class="thumb" src="{escape(sample["thumbnail"])}" alt="image of {escape(sample["question_id"])}">'
             if sample["thumbnail"] else '<div class="no-image">no image</div>')
    badges = [f'<span class="badge">{escape(sample["answer_type"])}</span>', f'<span class="badge">{escape(sample["category"])}</span>',
              f'<span class="badge">{escape(sample["source"] or "no source")}</span>']
    if sample["verified"] is True:
        badges.append(f'<span class="badge ok">verified · {escape(sample["verifier"] or "")}</span>')
    elif sample["verified"] is False:
        badges.append(f'<span class="badge fail">failed · {escape(sample["verifier"] or "")}</span>')
    else:
        badges.append('<span class="badge">no verdict</span>')
    badges += [f'<span class="badge reject">{escape(reason)}</span>' for reason in sample["reject_reasons"]]
    choices = ""
    if sample["choices"]:
        choices = '<ol class="choices" type="A">' + "".join(f"<li>{escape(c)}</li>" for c in sample["choices"]) + "</ol>"
    cot = (f'<div><strong>CoT</strong> ({escape(sample["cot_kind"])}, answer {escape(str(sample["cot_answer"]))})'
           f'<pre class="cot">{escape(sample["cot"])}</pre></div>' if sample["cot"] else "<div><em>no CoT</em></div>")
    return (f'<article class="sample" {attributes}>{image}<div class="badges">{"".join(badges)}</div>'
            f'<div class="question">{escape(sample["question"])}</div>{choices}'
            f'<div class="answer">answer: <strong>{escape(sample["answer"])}</strong></div>{cot}'
            f'{_verdicts_table(sample["verdicts"])}{_difficulty_table(sample["difficulty"])}'
            f'<div class="id">{escape(sample["question_id"])}</div></article>')


def _verdicts_table(verdicts: list[dict] | None) -> str:
    if not verdicts:
        return ""
    rows = "".join(f'<tr><td>{escape(v["verifier"])}</td><td>{"✓" if v["passed"] else "✗"}</td><td class="num">{v["score"]:.2f}</td>'
                   f'<td>{escape(v["detail"] or "")}</td></tr>' for v in verdicts)
    return f'<table class="detail-table verdicts"><tr><th>verifier</th><th></th><th>score</th><th>detail</th></tr>{rows}</table>'


def _difficulty_table(difficulty: list[dict] | None) -> str:
    if not difficulty:
        return '<div class="id">no difficulty scored</div>'
    rows = "".join(
        f'<tr><td class="policy">{escape(d["policy_id"])}</td><td>{escape(d["method"])}</td>'
        f'<td class="num">{_percent(d["pass_rate"])}{_of(d["n_rollouts"])}</td>'
        f'<td class="num">{_percent(d["pass_rate_text_only"])}</td>'
        f'<td>{"selected" if d["selected"] else "" if d["selected"] is None else "not selected"}</td></tr>'
        for d in difficulty)
    return (f'<table class="detail-table difficulty"><tr><th>policy</th><th>method</th><th>pass</th><th>no image</th><th></th></tr>'
            f'{rows}</table>')


def _of(n_rollouts: int | None) -> str:
    return "" if n_rollouts is None else f" of {n_rollouts}"
