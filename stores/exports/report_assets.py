"""The report page's inline style and script (stores/exports/report_page.py embeds both).

The script only filters: every sample card is in the HTML already, with its answer type, source and
difficulty bucket per policy in `data-` attributes; changing a filter hides the cards that do not
match and updates the count. No library, no fetch, nothing from the network.
"""

CSS = """
:root { --ink: #1d2430; --muted: #5c6675; --line: #d9dee6; --paper: #ffffff; --back: #f3f5f8;
        --accent: #2f6fb3; --good: #1f7a4a; --bad: #b3382f; --warn: #9a6a00; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: var(--back); }
header, main { max-width: 1280px; margin: 0 auto; padding: 16px 20px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
.meta { color: var(--muted); }
.meta code { background: #e7ebf1; padding: 0 4px; border-radius: 3px; }
.cap-note { margin: 8px 0 0; padding: 8px 12px; background: #fff6dd; border: 1px solid #f0d98a; border-radius: 6px; }
section { background: var(--paper); border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; margin: 0 0 16px; }
section h2 { margin: 0 0 10px; font-size: 17px; }
.charts { display: flex; flex-wrap: wrap; gap: 18px 28px; align-items: flex-start; }
.chart-title { font-weight: 600; font-size: 13px; fill: var(--ink); }
.bar { fill: var(--accent); }
.bar-track { fill: #eef1f5; }
.bar-label, .bar-value, .axis-label { font-size: 12px; fill: var(--muted); }
.axis { stroke: var(--line); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.examples { color: var(--muted); font-size: 12px; }
.filters { display: flex; flex-wrap: wrap; gap: 12px 20px; align-items: end; }
.filters label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); gap: 2px; }
.filters select { font: inherit; padding: 3px 6px; min-width: 150px; }
#shown-summary { margin-left: auto; font-weight: 600; }
#no-match { color: var(--muted); }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 14px; }
.sample { background: var(--paper); border: 1px solid var(--line); border-radius: 8px; padding: 10px; display: flex;
          flex-direction: column; gap: 6px; }
.sample[hidden] { display: none; }
.thumb { width: 100%; max-height: 200px; object-fit: contain; background: #eef1f5; border-radius: 4px; }
.no-image { height: 80px; display: grid; place-items: center; background: #eef1f5; color: var(--muted); border-radius: 4px; }
.badges { display: flex; flex-wrap: wrap; gap: 4px; }
.badge { font-size: 11px; padding: 1px 6px; border-radius: 9px; background: #e7ebf1; color: var(--ink); }
.badge.ok { background: #dff3e8; color: var(--good); }
.badge.fail { background: #f9e1df; color: var(--bad); }
.badge.reject { background: #fff0cc; color: var(--warn); }
.question { font-weight: 600; }
.choices { margin: 0; padding-left: 22px; }
.answer { color: var(--good); }
.cot { margin: 0; max-height: 7.5em; overflow: auto; white-space: pre-wrap; font: 12px/1.4 ui-monospace, "DejaVu Sans Mono", monospace;
       background: #f6f8fa; border-radius: 4px; padding: 6px; }
.detail-table td, .detail-table th { font-size: 12px; padding: 2px 4px; }
.id { color: var(--muted); font-size: 11px; word-break: break-all; }
"""

JS = """
'use strict';
(function () {
  const cards = Array.from(document.querySelectorAll('article.sample'));
  const select = (id) => document.getElementById(id);
  const answerType = select('filter-answer-type');
  const source = select('filter-source');
  const policy = select('filter-policy');
  const difficulty = select('filter-difficulty');
  const shown = select('shown-count');
  const noMatch = select('no-match');

  function bucketOf(card, policyId) {
    const buckets = JSON.parse(card.dataset.difficulty || '{}');
    return buckets[policyId] || 'unscored';
  }

  function apply() {
    let count = 0;
    for (const card of cards) {
      const visible = (answerType.value === '' || card.dataset.answerType === answerType.value)
        && (source.value === '' || card.dataset.source === source.value)
        && (difficulty.value === '' || bucketOf(card, policy.value) === difficulty.value);
      card.hidden = !visible;
      if (visible) count += 1;
    }
    shown.textContent = String(count);
    noMatch.hidden = count !== 0;
  }

  for (const control of [answerType, source, policy, difficulty]) {
    control.addEventListener('change', apply);
  }
  apply();
})();
"""
