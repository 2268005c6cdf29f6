"""The report page's stylesheet, inlined in ``<style>`` (the page loads nothing): screen and A4 print."""

CSS = """
:root { --ink: #1f2328; --muted: #59636e; --rule: #d8dee4; --soft: #f6f8fa; --accent: #1f3a5f;
  --pass: #2f7a4d; --pass-bg: #e7f3ec; --pass-ink: #1d5234;
  --fail: #b3261e; --fail-bg: #fbe9e7; --fail-ink: #8c1d17;
  --unk: #c8961a; --unk-bg: #fdf3d8; --unk-ink: #6b4d00;
  --other: #b8bfc7; --other-bg: #eef1f4; --other-ink: #48515b;
  --mono: "SFMono-Regular", Menlo, Consolas, "Liberation Mono", "DejaVu Sans Mono", monospace; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", "Helvetica Neue", Arial, "Liberation Sans",
    "Noto Sans", "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", sans-serif;
  font-variant-numeric: tabular-nums; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 36px 48px; }
h1 { font-size: 24px; line-height: 1.25; margin: 0 0 4px; font-weight: 650; letter-spacing: -0.01em; }
h2 { font-size: 18px; margin: 36px 0 10px; padding-bottom: 6px; border-bottom: 1px solid var(--rule);
  font-weight: 650; color: var(--accent); }
h3 { font-size: 15px; margin: 0; font-weight: 650; }
p { margin: 6px 0 10px; }
code, .mono { font-family: var(--mono); font-size: 12.5px; }
.sub { color: var(--muted); margin: 0 0 16px; }
.muted { color: var(--muted); }
.small { font-size: 12.5px; }
dl.meta { display: flex; flex-wrap: wrap; gap: 10px 36px; margin: 0 0 18px; }
dl.meta div { min-width: 0; max-width: 100%; }
dl.meta dt { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: 0.04em; }
dl.meta dd { margin: 0; font-weight: 600; overflow-wrap: anywhere; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 4px 0 8px; }
.card { flex: 1 1 180px; border: 1px solid var(--rule); border-left-width: 5px; border-radius: 6px;
  padding: 10px 14px; background: #fff; }
.card .n { font-size: 28px; font-weight: 650; line-height: 1.1; display: block; }
.card .l { color: var(--muted); font-size: 13px; }
.card.candidate { border-left-color: var(--pass); }
.card.potential-candidate { border-left-color: var(--unk); }
.card.ineligible { border-left-color: var(--fail); }
.card.other { border-left-color: var(--other); }
.note { border: 1px solid var(--rule); background: var(--soft); border-radius: 6px; padding: 10px 14px;
  margin: 12px 0; }
.warn { border-color: #e7c27a; background: var(--unk-bg); }
.empty { font-size: 16px; padding: 18px 20px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 4px; }
th, td { text-align: left; vertical-align: top; padding: 6px 8px; border-bottom: 1px solid var(--rule); }
th { font-size: 12px; font-weight: 600; color: var(--muted); text-transform: uppercase;
  letter-spacing: 0.03em; border-bottom: 1.5px solid #b9c1ca; }
td.n, th.n { text-align: right; white-space: nowrap; }
caption { text-align: left; font-size: 12.5px; color: var(--muted); caption-side: bottom; padding-top: 6px; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
#funnel-table td { padding-top: 4px; padding-bottom: 4px; }
.funnel-wrap { margin: 6px 0 4px; overflow-x: auto; }
svg.funnel { display: block; width: 100%; height: auto; }
svg.funnel text { font-family: inherit; font-size: 12.5px; }
svg.funnel .f-id, svg.funnel .f-note { fill: var(--ink); }
svg.funnel .f-num, svg.funnel .f-type { fill: var(--muted); font-size: 11.5px; }
svg.funnel .f-id { font-family: var(--mono); font-size: 12px; }
svg.funnel .f-group { font-size: 11.5px; font-weight: 600; fill: var(--accent); text-transform: uppercase;
  letter-spacing: 0.05em; }
svg.funnel .f-rule { stroke: var(--rule); }
svg.funnel .seg-num { font-size: 11px; font-weight: 600; }
svg.funnel .f-strong { font-weight: 650; }
svg.funnel .f-fail { fill: var(--fail-ink); }
svg.funnel .f-unknown { fill: var(--unk-ink); }
.legend { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 4px 0 10px; font-size: 12.5px;
  color: var(--muted); padding: 0; list-style: none; }
.legend li { display: flex; align-items: center; gap: 6px; }
.sw { display: inline-block; width: 14px; height: 10px; border-radius: 2px; }
.sw-pass { background: var(--pass); }
.sw-fail { background: var(--fail); }
.sw-other { background: var(--other); }
.sw-unknown { background: repeating-linear-gradient(45deg, #f0c24b 0 3px, #c8961a 3px 5px); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
  white-space: nowrap; border: 1px solid transparent; }
.v-pass { background: var(--pass-bg); color: var(--pass-ink); border-color: #b9dcc7; }
.v-fail { background: var(--fail-bg); color: var(--fail-ink); border-color: #f1bcb6; }
.v-unknown { background: var(--unk-bg); color: var(--unk-ink); border-color: #ecd28f; }
.v-other { background: var(--other-bg); color: var(--other-ink); border-color: #d5dbe1; }
ul.resolve, ul.ev { margin: 0; padding-left: 0; list-style: none; }
ul.resolve li, ul.ev li { margin: 0 0 3px; overflow-wrap: anywhere; }
ul.resolve code { color: var(--accent); margin-right: 8px; }
ul.from-notes { margin-top: 4px; }
ul.suggest { margin: 6px 0 0; padding-left: 0; list-style: none; font-size: 12.5px; }
ul.suggest li { margin: 0 0 3px; overflow-wrap: anywhere; }
ul.suggest code { color: var(--muted); margin-right: 6px; }
.tag { display: inline-block; font-size: 11px; border: 1px solid var(--rule); border-radius: 3px;
  padding: 0 4px; margin-right: 6px; color: var(--accent); background: var(--soft); }
ul.ev code { color: var(--muted); margin-right: 6px; }
td.patient-ref { white-space: nowrap; }
table.components { width: auto; min-width: 60%; }
table.components td, table.components th { padding-right: 20px; }
.patient h3 code { font-size: 15px; color: var(--ink); }
tr.is-unknown td { background: #fffaeb !important; }
tr.is-fail td { background: #fff5f4 !important; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.patient { margin: 18px 0 22px; }
.patient-head { display: flex; gap: 12px; align-items: baseline; flex-wrap: wrap; }
tr.phead th { text-transform: none; letter-spacing: 0; font-size: 14px; font-weight: 400; color: var(--ink);
  border-bottom: none; padding: 0 0 6px; }
.patient table td:first-child { width: 190px; }
.patient table td:nth-child(2) { width: 150px; }
.patient table td:last-child { width: 34%; }
tr.component td:first-child { padding-left: 26px; }
.crit-type { display: block; color: var(--muted); font-size: 11.5px; }
footer { margin-top: 40px; padding-top: 10px; border-top: 1px solid var(--rule); color: var(--muted);
  font-size: 12px; }
@media print {
  @page { size: A4; margin: 14mm 12mm; }
  body { font-size: 10pt; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  main { max-width: none; padding: 0; }
  h2 { margin-top: 18pt; break-after: avoid; page-break-after: avoid; }
  h3, .patient-head { break-after: avoid; page-break-after: avoid; }
  tr, .card, .note, li { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  .funnel-wrap, svg.funnel { break-inside: avoid; page-break-inside: avoid; overflow: visible; }
  #patients { break-before: page; page-break-before: always; }
  /* A full patient starts a page (its table may run on, rows whole, header repeated);
     short ones (no DM diagnosis) share pages without being split. */
  .patient { margin: 0 0 14pt; }
  .patient.full { break-before: page; page-break-before: always; }
  .patient:first-of-type { break-before: auto; page-break-before: auto; }
  .patient.short { break-inside: avoid; page-break-inside: avoid; }
  a { color: inherit; }
  tbody tr:nth-child(even) td { background: none; }
}
"""
