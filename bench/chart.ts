// A dependency-free SVG figure for one benchmark run: one panel per migration with pages sent and
// duration per round, total time against baselines, and the downtime split into its parts.
// The output is a standalone SVG document (no fonts, scripts or links), to open in a browser.

export interface ChartRound {
  round: number;
  pagesSent: number;
  durationMs: number;
  stopAndCopy?: boolean;
  throttlePercent?: number;
}

export interface ChartMigration {
  /** e.g. 'workload200 rep 1' or 'cold-mixed (median rep)'. */
  label: string;
  rounds: ChartRound[];
  downtimeMs: number;
  totalTimeMs: number;
  /** Parts of the downtime in ms, e.g. { finalSyncMs, transferMs, verifyMs, prepareMs, handshakeMs }. */
  downtimeSplit?: Record<string, number>;
  /** Total times in ms to compare pagewire's with, e.g. { 'plain TCP copy': 812 }. */
  baselines?: Record<string, number>;
}

const WIDTH = 960;
const FONT = 'system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif';
/** Average glyph width as a share of the font size, on the generous side so estimates don't overflow. */
const CHAR_WIDTH = 0.6;

const COLOR = {
  pages: '#4e79a7',
  duration: '#59a14f',
  stopAndCopy: '#e15759',
  pagewire: '#4e79a7',
  baseline: '#a0a0a0',
  grid: '#e4e4e4',
  axis: '#888888',
  text: '#333333',
  muted: '#777777',
  throttle: '#b07aa1',
  unaccounted: '#d0d0d0',
};
const SPLIT_COLORS = ['#f28e2b', '#edc948', '#76b7b2', '#b07aa1', '#ff9da7', '#9c755f', '#4e79a7', '#59a14f', '#bab0ac'];

// Panel geometry (y offsets are relative to the panel's top).
const PANEL_X = 10;
const PANEL_W = WIDTH - 2 * PANEL_X;
const ROUND_CHART_TOP = 84;
const ROUND_CHART_H = 150;
const LEFT_PLOT = { x: 80, w: 370 };
const RIGHT_PLOT = { x: 560, w: 370 };
const HBAR_LABEL_X = 26;
const HBAR_X = 190;
const HBAR_W = 640;
const HBAR_ROW = 22;
const HBAR_H = 14;
const AXIS_H = 18;
const LEGEND_ROW = 18;

/** Escapes text for XML content and attribute values, dropping characters XML 1.0 does not allow. */
export function escapeXml(text: string): string {
  return String(text)
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g, '')
    .replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

/** A finite number, or 0 (NaN, ±Infinity, non-numbers). */
function finite(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : 0;
}

/** A finite, non-negative number, or 0. */
function size(value: unknown): number {
  return Math.max(0, finite(value));
}

/** Milliseconds: finite, non-negative, to the microsecond (so that 1e-9 ms is 0). */
function sizeMs(value: unknown): number {
  return Math.round(size(value) * 1000) / 1000;
}

/** A number for an SVG attribute: finite, at most two decimals. */
function n(value: number): string {
  const v = Math.round(finite(value) * 100) / 100;
  return String(Object.is(v, -0) ? 0 : v);
}

/**
 * Axis ticks from 0 to at least `max`, with a step of 1, 2 or 5 times a power of ten and about
 * `target` intervals. A non-positive or non-finite max gives [0, 1]. `integer` keeps the step >= 1.
 */
export function niceTicks(max: number, target = 5, integer = false): number[] {
  const top = finite(max);
  const count = Math.max(1, Math.round(finite(target)) || 5);
  if (top <= 0) return [0, 1];
  const raw = top / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  let step = magnitude * 10;
  for (const m of [1, 2, 5, 10]) {
    if (m * magnitude >= raw) {
      step = m * magnitude;
      break;
    }
  }
  if (integer) step = Math.max(1, step);
  const intervals = Math.ceil(top / step - 1e-9);
  const decimals = Math.max(0, -Math.floor(Math.log10(step)));
  const ticks: number[] = [];
  for (let i = 0; i <= intervals; i++) ticks.push(Number((i * step).toFixed(decimals)));
  return ticks;
}

/** Short number for ticks and bar labels: 950, 1.2k, 157k, 1.5M. */
function compact(value: number): string {
  const v = finite(value);
  const a = Math.abs(v);
  const trim = (s: string) => s.replace(/\.0+$/, '').replace(/(\.\d*?)0+$/, '$1');
  if (a >= 1e9) return `${trim((v / 1e9).toFixed(a >= 1e10 ? 0 : 1))}G`;
  if (a >= 1e6) return `${trim((v / 1e6).toFixed(a >= 1e7 ? 0 : 1))}M`;
  if (a >= 1e4) return `${trim((v / 1e3).toFixed(0))}k`;
  if (a >= 1e3) return `${trim((v / 1e3).toFixed(1))}k`;
  if (Number.isInteger(v)) return String(v);
  return trim(v.toFixed(a >= 10 ? 1 : 2));
}

/** Milliseconds with precision that suits the size: 4232, 188.5, 2.9, 0.25, 0.004 (no unit). */
function ms(value: number): string {
  const v = finite(value);
  const a = Math.abs(v);
  const trim = (t: string) => t.replace(/(\.\d*?)0+$/, '$1').replace(/\.$/, '');
  if (a >= 1000) return v.toFixed(0);
  if (a >= 10) return trim(v.toFixed(1));
  if (a >= 1) return trim(v.toFixed(2));
  return trim(v.toFixed(3));
}

/** A tick's label: compact from 1000 up, else with as many decimals as the step has. */
function tickLabel(tick: number, step: number): string {
  if (Math.abs(tick) >= 1000) return compact(tick);
  const decimals = step > 0 && step < 1 ? Math.min(6, Math.ceil(-Math.log10(step) - 1e-9)) : 0;
  return tick.toFixed(decimals);
}

/** Shortens text to fit about `width` px at `fontSize`, with an ellipsis. */
function fit(text: string, width: number, fontSize: number): string {
  const chars = Array.from(String(text));
  const max = Math.max(1, Math.floor(width / (fontSize * CHAR_WIDTH)));
  return chars.length <= max ? chars.join('') : `${chars.slice(0, max - 1).join('')}…`;
}

function textWidth(text: string, fontSize: number): number {
  return Array.from(text).length * fontSize * CHAR_WIDTH;
}

/** 'finalSyncMs' -> 'final sync', 'verify_and_persist' -> 'verify and persist'. */
function humanize(key: string): string {
  const words = String(key)
    .replace(/(?<=.)(?:Ms|_ms|_MS)$/, '')
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/[_-]+/g, ' ')
    .trim()
    .toLowerCase();
  return words || String(key);
}

interface TextOptions {
  size?: number;
  anchor?: 'start' | 'middle' | 'end';
  weight?: 'bold';
  fill?: string;
  baseline?: 'middle';
}

function text(x: number, y: number, content: string, o: TextOptions = {}): string {
  const attrs = [`x="${n(x)}"`, `y="${n(y)}"`];
  if (o.size !== undefined) attrs.push(`font-size="${o.size}"`);
  if (o.anchor && o.anchor !== 'start') attrs.push(`text-anchor="${o.anchor}"`);
  if (o.weight) attrs.push(`font-weight="${o.weight}"`);
  if (o.fill) attrs.push(`fill="${o.fill}"`);
  if (o.baseline) attrs.push(`dominant-baseline="${o.baseline}"`);
  return `<text ${attrs.join(' ')}>${escapeXml(content)}</text>`;
}

function rect(x: number, y: number, w: number, h: number, fill: string, extra = '', tooltip?: string): string {
  const attrs = `x="${n(x)}" y="${n(y)}" width="${n(Math.max(0, w))}" height="${n(Math.max(0, h))}" fill="${fill}"${extra ? ` ${extra}` : ''}`;
  return tooltip === undefined ? `<rect ${attrs}/>` : `<rect ${attrs}><title>${escapeXml(tooltip)}</title></rect>`;
}

function line(x1: number, y1: number, x2: number, y2: number, stroke: string, extra = ''): string {
  return `<line x1="${n(x1)}" y1="${n(y1)}" x2="${n(x2)}" y2="${n(y2)}" stroke="${stroke}"${extra ? ` ${extra}` : ''}/>`;
}

interface RoundSeries {
  title: string;
  cls: string;
  color: string;
  value: (r: ChartRound) => number;
  /** The values to plot, sanitised. */
  clean: (v: unknown) => number;
  /** For the value over a bar and its tooltip. */
  formatValue: (v: number) => string;
  integer: boolean;
}

/** A vertical bar chart with one bar per round, the plot area's top-left at (x, top). */
function roundChart(rounds: ChartRound[], x: number, w: number, top: number, series: RoundSeries): string[] {
  const out: string[] = [];
  const h = ROUND_CHART_H;
  const bottom = top + h;
  out.push(text(x - 54, top - 20, series.title, { size: 12, weight: 'bold' }));
  const values = rounds.map((r) => series.clean(series.value(r)));
  const band = w / Math.max(1, rounds.length);
  const showValues = band >= 34;
  // Room over the tallest bar for its value and, on the stop-and-copy round, that label too.
  const headroom = values.reduce((most, v, i) => {
    const px = (showValues ? 14 : 0) + (rounds[i]!.stopAndCopy === true ? 14 : 0);
    return Math.max(most, px === 0 ? v : (v * h) / (h - px));
  }, 0);
  const ticks = niceTicks(headroom, 5, series.integer);
  const yMax = ticks[ticks.length - 1]!;
  const yOf = (v: number) => bottom - (v / yMax) * h;
  for (const t of ticks) {
    const y = yOf(t);
    out.push(line(x, y, x + w, y, t === 0 ? COLOR.axis : COLOR.grid));
    out.push(text(x - 6, y, tickLabel(t, ticks[1]!), { size: 10, anchor: 'end', fill: COLOR.muted, baseline: 'middle' }));
  }
  out.push(line(x, top, x, bottom, COLOR.axis));
  if (rounds.length === 0) {
    out.push(text(x + w / 2, top + h / 2, 'no rounds', { size: 12, anchor: 'middle', fill: COLOR.muted }));
    return out;
  }
  const barW = Math.max(1, Math.min(60, band * 0.7));
  const labelEvery = niceTicks(rounds.length, Math.floor(w / 30), true)[1]!;
  const showThrottle = band >= 24 && rounds.some((r) => size(r.throttlePercent) > 0);
  rounds.forEach((r, i) => {
    const v = values[i]!;
    const cx = x + band * (i + 0.5);
    const y = yOf(v);
    const sc = r.stopAndCopy === true;
    const roundNo = Number.isFinite(r.round) ? String(r.round) : String(i + 1);
    const throttle = size(r.throttlePercent);
    const tip = `round ${roundNo}${sc ? ' (stop-and-copy)' : ''}: ${series.formatValue(v)}${throttle > 0 ? `, throttle ${compact(throttle)}%` : ''}`;
    out.push(rect(cx - barW / 2, y, barW, bottom - y, sc ? COLOR.stopAndCopy : series.color, `class="${series.cls}${sc ? ' stop-and-copy' : ''}"`, tip));
    if (showValues) {
      out.push(text(cx, y - 4, fit(series.formatValue(v), band, 10), { size: 10, anchor: 'middle', fill: COLOR.text }));
    }
    if (sc) {
      const labelY = showValues ? y - 17 : y - 4;
      const anchor = cx > x + w - 40 ? 'end' : cx < x + 40 ? 'start' : 'middle';
      const lx = anchor === 'end' ? cx + barW / 2 : anchor === 'start' ? cx - barW / 2 : cx;
      out.push(text(lx, labelY, 'stop-and-copy', { size: 10, anchor, weight: 'bold', fill: COLOR.stopAndCopy }));
    }
    if (i === 0 || (i + 1) % labelEvery === 0 || sc) {
      out.push(text(cx, bottom + 13, roundNo, { size: 10, anchor: 'middle', fill: COLOR.muted }));
      if (throttle > 0 && showThrottle) {
        out.push(text(cx, bottom + 25, `${compact(throttle)}%`, { size: 9, anchor: 'middle', fill: COLOR.throttle }));
      }
    }
  });
  const caption = showThrottle ? 'round (throttle %)' : 'round';
  out.push(text(x + w, bottom + (showThrottle ? 38 : 27), caption, { size: 10, anchor: 'end', fill: COLOR.muted }));
  return out;
}

/** Tick labels under a horizontal axis at y, from HBAR_X over HBAR_W. */
function hAxis(ticks: number[], y: number): string[] {
  const out: string[] = [];
  const max = ticks[ticks.length - 1]!;
  for (const t of ticks) {
    const x = HBAR_X + (t / max) * HBAR_W;
    out.push(line(x, y, x, y + 4, COLOR.axis));
    out.push(text(x, y + 14, tickLabel(t, ticks[1]!), { size: 10, anchor: 'middle', fill: COLOR.muted }));
  }
  out.push(line(HBAR_X, y, HBAR_X + HBAR_W, y, COLOR.axis));
  return out;
}

/** A bar's value: after the bar's end, or inside it when it would run off the panel. */
function barValue(value: string, barWidth: number, rowY: number, insideFill: string): string {
  const right = PANEL_X + PANEL_W - 8;
  const ty = rowY + HBAR_ROW / 2 + 1;
  const end = HBAR_X + barWidth;
  if (end + 6 + textWidth(value, 11) <= right || barWidth < textWidth(value, 11) + 12) {
    return text(end + 6, ty, fit(value, right - end - 6, 11), { size: 11, baseline: 'middle', fill: COLOR.text });
  }
  return text(end - 6, ty, value, { size: 11, baseline: 'middle', anchor: 'end', fill: insideFill });
}

interface Part {
  label: string;
  value: number;
  color: string;
}

/** Legend entries wrapped into lines that fit the panel; returns the SVG and the height used. */
function legend(parts: Part[], y: number): { svg: string[]; height: number } {
  const out: string[] = [];
  let x = HBAR_X;
  let row = 0;
  const right = PANEL_X + PANEL_W - 16;
  for (const p of parts) {
    const label = fit(`${p.label} ${ms(p.value)} ms`, right - HBAR_X - 16, 11);
    const w = 16 + textWidth(label, 11) + 18;
    if (x + w > right && x > HBAR_X) {
      row++;
      x = HBAR_X;
    }
    const ly = y + row * LEGEND_ROW;
    out.push(rect(x, ly, 11, 11, p.color, 'class="legend-swatch"'));
    out.push(text(x + 16, ly + 9.5, label, { size: 11 }));
    x += w;
  }
  return { svg: out, height: parts.length === 0 ? 0 : (row + 1) * LEGEND_ROW };
}

function panel(m: ChartMigration, top: number): { svg: string[]; height: number } {
  const out: string[] = [];
  const rounds = Array.isArray(m.rounds) ? m.rounds.filter((r) => r !== null && typeof r === 'object') : [];
  const total = sizeMs(m.totalTimeMs);
  const downtime = sizeMs(m.downtimeMs);
  const label = String(m.label ?? '');

  out.push(`<g class="panel">`);
  const labelFit = fit(label, PANEL_W - 32, 15);
  out.push(`<text x="${HBAR_LABEL_X}" y="${n(top + 24)}" font-size="15" font-weight="bold"><title>${escapeXml(label)}</title>${escapeXml(labelFit)}</text>`);
  const sc = rounds.filter((r) => r.stopAndCopy === true).map((r, i) => (Number.isFinite(r.round) ? r.round : i + 1));
  const summary = `total ${ms(total)} ms · downtime ${ms(downtime)} ms · ${rounds.length} round${rounds.length === 1 ? '' : 's'}` +
    `${sc.length > 0 ? ` (stop-and-copy: ${sc.join(', ')})` : ''} · ${compact(rounds.reduce((s, r) => s + size(r.pagesSent), 0))} pages sent`;
  out.push(text(HBAR_LABEL_X, top + 42, fit(summary, PANEL_W - 32, 11), { size: 11, fill: COLOR.muted }));

  // (a) pages per round, (b) duration per round.
  const chartTop = top + ROUND_CHART_TOP;
  out.push(...roundChart(rounds, LEFT_PLOT.x, LEFT_PLOT.w, chartTop, {
    title: 'pages sent per round', cls: 'bar-pages', color: COLOR.pages, value: (r) => r.pagesSent, clean: size, formatValue: compact, integer: true,
  }));
  out.push(...roundChart(rounds, RIGHT_PLOT.x, RIGHT_PLOT.w, chartTop, {
    title: 'round duration (ms)', cls: 'bar-duration', color: COLOR.duration, value: (r) => r.durationMs, clean: sizeMs, formatValue: ms, integer: false,
  }));
  const throttleRow = rounds.length > 0 && LEFT_PLOT.w / rounds.length >= 24 && rounds.some((r) => size(r.throttlePercent) > 0);
  let y = chartTop + ROUND_CHART_H + (throttleRow ? 48 : 38);

  // (c) total time against the baselines.
  const bars: Part[] = [{ label: 'pagewire', value: total, color: COLOR.pagewire }];
  for (const [name, value] of Object.entries(m.baselines ?? {})) {
    if (typeof value === 'number' && Number.isFinite(value) && value >= 0) bars.push({ label: name, value: sizeMs(value), color: COLOR.baseline });
  }
  out.push(text(HBAR_LABEL_X, y + 12, 'total time (ms)', { size: 12, weight: 'bold' }));
  y += 20;
  const tTicks = niceTicks(Math.max(...bars.map((b) => b.value)));
  const tMax = tTicks[tTicks.length - 1]!;
  for (const t of tTicks.slice(1)) {
    const x = HBAR_X + (t / tMax) * HBAR_W;
    out.push(line(x, y, x, y + bars.length * HBAR_ROW, COLOR.grid));
  }
  for (const b of bars) {
    const w = (b.value / tMax) * HBAR_W;
    out.push(text(HBAR_LABEL_X, y + HBAR_ROW / 2 + 1, fit(b.label, HBAR_X - HBAR_LABEL_X - 10, 11), {
      size: 11, baseline: 'middle', weight: b.label === 'pagewire' && b === bars[0] ? 'bold' : undefined,
    }));
    out.push(rect(HBAR_X, y + (HBAR_ROW - HBAR_H) / 2, w, HBAR_H, b.color, `class="bar-total"`, `${b.label}: ${ms(b.value)} ms`));
    let valueText = `${ms(b.value)} ms`;
    if (b !== bars[0] && b.value > 0 && total > 0) valueText += ` (pagewire ×${(total / b.value).toFixed(2)})`;
    out.push(barValue(valueText, w, y, b === bars[0] ? '#ffffff' : '#222222'));
    y += HBAR_ROW;
  }
  out.push(...hAxis(tTicks, y));
  y += AXIS_H + 14;

  // (d) downtime, stacked by part.
  const parts: Part[] = [];
  let ci = 0;
  for (const [key, value] of Object.entries(m.downtimeSplit ?? {})) {
    if (typeof value !== 'number' || !Number.isFinite(value)) continue;
    parts.push({ label: humanize(key), value: sizeMs(value), color: SPLIT_COLORS[ci++ % SPLIT_COLORS.length]! });
  }
  const partsSum = parts.reduce((s, p) => s + p.value, 0);
  if (parts.length === 0) parts.push({ label: 'downtime', value: downtime, color: COLOR.stopAndCopy });
  else if (downtime - partsSum > Math.max(0.05, downtime * 0.01)) {
    parts.push({ label: 'unaccounted', value: sizeMs(downtime - partsSum), color: COLOR.unaccounted });
  }
  const stackTotal = parts.reduce((s, p) => s + p.value, 0);
  out.push(text(HBAR_LABEL_X, y + 12, `downtime ${ms(downtime)} ms, by part (ms)`, { size: 12, weight: 'bold' }));
  y += 20;
  const dTicks = niceTicks(stackTotal);
  const dMax = dTicks[dTicks.length - 1]!;
  out.push(text(HBAR_LABEL_X, y + HBAR_ROW / 2 + 1, 'downtime', { size: 11, baseline: 'middle' }));
  let x = HBAR_X;
  for (const p of parts) {
    const w = (p.value / dMax) * HBAR_W;
    if (w > 0) out.push(rect(x, y + (HBAR_ROW - HBAR_H) / 2, w, HBAR_H, p.color, 'class="bar-downtime"', `${p.label}: ${ms(p.value)} ms`));
    x += w;
  }
  out.push(barValue(`${ms(stackTotal)} ms`, x - HBAR_X, y, '#222222'));
  y += HBAR_ROW;
  out.push(...hAxis(dTicks, y));
  y += AXIS_H + 10;
  const leg = legend(parts, y);
  out.push(...leg.svg);
  y += leg.height + 8;

  const height = y - top;
  out.splice(1, 0, rect(PANEL_X, top, PANEL_W, height, '#fcfcfc', 'stroke="#dddddd" rx="6" class="panel-bg"'));
  out.push('</g>');
  return { svg: out, height };
}

/** A standalone SVG document for one benchmark run: `title` on top, one panel per migration. */
export function renderRunSvg(title: string, migrations: ChartMigration[]): string {
  const body: string[] = [];
  const heading = String(title ?? '');
  body.push(`<text x="${PANEL_X + 6}" y="30" font-size="18" font-weight="bold">${escapeXml(fit(heading, WIDTH - 40, 18))}</text>`);
  let y = 48;
  const list = Array.isArray(migrations) ? migrations.filter((m) => m !== null && typeof m === 'object') : [];
  if (list.length === 0) {
    body.push(text(WIDTH / 2, y + 40, 'no migrations', { size: 13, anchor: 'middle', fill: COLOR.muted }));
    y += 80;
  }
  for (const m of list) {
    const p = panel(m, y);
    body.push(...p.svg);
    y += p.height + 14;
  }
  const height = Math.ceil(y);
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family='${FONT}' font-size="11" fill="${COLOR.text}">`,
    `<title>${escapeXml(heading)}</title>`,
    `<rect x="0" y="0" width="${WIDTH}" height="${height}" fill="#ffffff"/>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}
