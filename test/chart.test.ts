import { describe, expect, it } from 'vitest';
import { niceTicks, renderRunSvg, type ChartMigration } from '../dist/bench/chart.js';

/**
 * A small XML well-formedness check, enough for what the renderer writes: every '<' starts a valid tag,
 * comment or declaration; tags balance; attributes are quoted and unique; '&' only starts an entity;
 * one root element. Returns the element names in document order, or throws with the reason.
 */
function checkXml(xml: string): string[] {
  const entity = /^&(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);/;
  const checkText = (s: string, where: string) => {
    for (let i = s.indexOf('&'); i !== -1; i = s.indexOf('&', i + 1)) {
      if (!entity.test(s.slice(i))) throw new Error(`bare & in ${where}: ${s.slice(i, i + 20)}`);
    }
    if (s.includes('<')) throw new Error(`bare < in ${where}`);
  };
  const stack: string[] = [];
  const names: string[] = [];
  let roots = 0;
  let i = 0;
  if (xml.startsWith('<?xml')) {
    const end = xml.indexOf('?>');
    if (end === -1) throw new Error('unterminated XML declaration');
    i = end + 2;
  }
  while (i < xml.length) {
    const lt = xml.indexOf('<', i);
    const chunk = xml.slice(i, lt === -1 ? xml.length : lt);
    if (stack.length === 0 && chunk.trim() !== '') throw new Error(`text outside the root: ${chunk.slice(0, 20)}`);
    checkText(chunk, 'text');
    if (lt === -1) break;
    if (xml.startsWith('<!--', lt)) {
      const end = xml.indexOf('-->', lt);
      if (end === -1) throw new Error('unterminated comment');
      i = end + 3;
      continue;
    }
    const tag = /^<(\/?)([A-Za-z_][\w.:-]*)((?:\s+[A-Za-z_][\w.:-]*\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(\/?)>/.exec(xml.slice(lt));
    if (!tag) throw new Error(`malformed tag at ${lt}: ${xml.slice(lt, lt + 40)}`);
    const [whole, closing, name, attrs, selfClosing] = tag as unknown as [string, string, string, string, string];
    if (closing) {
      if (attrs || selfClosing) throw new Error(`closing tag with attributes: ${whole}`);
      const open = stack.pop();
      if (open !== name) throw new Error(`</${name}> closes <${open ?? 'nothing'}>`);
    } else {
      if (stack.length === 0 && ++roots > 1) throw new Error('more than one root element');
      names.push(name);
      const seen = new Set<string>();
      for (const a of attrs.matchAll(/([A-Za-z_][\w.:-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)) {
        if (seen.has(a[1]!)) throw new Error(`duplicate attribute ${a[1]} in ${whole}`);
        seen.add(a[1]!);
        checkText(a[2] ?? a[3] ?? '', `attribute ${a[1]}`);
      }
      if (!selfClosing) stack.push(name);
    }
    i = lt + whole.length;
  }
  if (stack.length > 0) throw new Error(`unclosed: ${stack.join(' > ')}`);
  if (roots !== 1) throw new Error('no root element');
  return names;
}

const count = (svg: string, pattern: RegExp) => svg.match(pattern)?.length ?? 0;

/** Every geometric attribute is a finite number, and widths and heights are not negative. */
function expectFiniteGeometry(svg: string) {
  expect(svg).not.toMatch(/NaN|Infinity|undefined|null/);
  const attrs = [...svg.matchAll(/\s(x|y|x1|y1|x2|y2|width|height|font-size)="([^"]*)"/g)];
  expect(attrs.length).toBeGreaterThan(0);
  for (const [, name, value] of attrs) {
    expect(Number.isFinite(Number(value)), `${name}="${value}"`).toBe(true);
    if (name === 'width' || name === 'height') expect(Number(value)).toBeGreaterThanOrEqual(0);
  }
}

const realistic: ChartMigration[] = [
  {
    label: 'workload200 rep 1',
    totalTimeMs: 4231.7,
    downtimeMs: 188.5,
    rounds: [
      { round: 1, pagesSent: 157301, durationMs: 2951.23 },
      { round: 2, pagesSent: 21034, durationMs: 610.4, throttlePercent: 20 },
      { round: 3, pagesSent: 9120, durationMs: 260.1, throttlePercent: 40 },
      { round: 4, pagesSent: 6010, durationMs: 170.2, stopAndCopy: true },
    ],
    downtimeSplit: { finalSyncMs: 12.3, transferMs: 140.2, verifyMs: 20.1, prepareMs: 9.4, handshakeMs: 1.2 },
    baselines: { 'plain TCP copy': 839.84, 'QEMU best': 1300 },
  },
  {
    label: 'idle (median rep)',
    totalTimeMs: 2879.4,
    downtimeMs: 2.9,
    rounds: [
      { round: 1, pagesSent: 157301, durationMs: 2951.23 },
      { round: 2, pagesSent: 0, durationMs: 1.5, stopAndCopy: true },
    ],
    downtimeSplit: { finalSync: 0, pause: 0.2, transfer: 1.5, verifyAndPersist: 1.1 },
    baselines: { 'plain TCP copy': 802.85 },
  },
];

describe('renderRunSvg', () => {
  it('writes a well-formed standalone SVG with one bar per round per series', () => {
    const svg = renderRunSvg('migrate 1 GiB', realistic);
    const names = checkXml(svg);
    expect(names[0]).toBe('svg');
    expect(svg).toMatch(/<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" width="960" height="\d+" viewBox="0 0 960 \d+"/);
    expect(names).not.toContain('script');
    expect(svg).not.toMatch(/<image|xlink:href|href=|@import|url\(/);

    const rounds = realistic.reduce((s, m) => s + m.rounds.length, 0);
    expect(count(svg, /<rect [^>]*class="bar-pages[ "]/g)).toBe(rounds);
    expect(count(svg, /<rect [^>]*class="bar-duration[ "]/g)).toBe(rounds);
    // The stop-and-copy round of each migration, in both series, coloured and labelled differently.
    const scBars = [...svg.matchAll(/<rect [^>]*class="bar-(?:pages|duration) stop-and-copy"[^>]*>/g)].map((m) => m[0]);
    expect(scBars).toHaveLength(4);
    const fill = (r: string) => /fill="([^"]+)"/.exec(r)![1];
    const normalPages = /<rect [^>]*class="bar-pages"[^>]*>/.exec(svg)![0];
    for (const r of scBars) expect(fill(r)).not.toBe(fill(normalPages));
    expect(count(svg, />stop-and-copy<\/text>/g)).toBe(4);
    // Pagewire plus the three baselines; the downtime parts with their values in the legend.
    expect(count(svg, /class="bar-total"/g)).toBe(2 + 3);
    expect(svg).toContain('plain TCP copy');
    expect(svg).toContain('QEMU best');
    expect(svg).toContain('final sync 12.3 ms');
    expect(svg).toContain('transfer 140.2 ms');
    expect(svg).toContain('verify and persist 1.1 ms');
    expect(svg).toContain('>157k</text>');
    expectFiniteGeometry(svg);
  });

  it('labels sub-millisecond axes with enough decimals', () => {
    const svg = renderRunSvg('t', [{ label: 'fast', rounds: [], totalTimeMs: 0.8, downtimeMs: 0.37, downtimeSplit: { aMs: 0.25, bMs: 0.12 } }]);
    for (const tick of ['0.1', '0.2', '0.3', '0.4']) expect(svg).toContain(`>${tick}</text>`);
    expect(svg).toContain('a 0.25 ms');
    expect(svg).toContain('b 0.12 ms');
    expect(svg).toContain('downtime 0.37 ms');
  });

  it('grows in height with the number of panels', () => {
    const height = (svg: string) => Number(/<svg [^>]*height="(\d+)"/.exec(svg)![1]);
    const one = height(renderRunSvg('t', realistic.slice(0, 1)));
    const two = height(renderRunSvg('t', realistic));
    const four = height(renderRunSvg('t', [...realistic, ...realistic]));
    expect(two).toBeGreaterThan(one + 200);
    expect(four).toBeGreaterThan(two + 400);
  });

  it('escapes markup in the title, labels and keys', () => {
    const svg = renderRunSvg('run <1> & "two"', [{
      ...realistic[0]!,
      label: 'a <b>bold</b> & \'quoted\' label',
      baselines: { '<script>alert(1)</script>': 900 },
      downtimeSplit: { 'x&y': 5, 'a<b': 3 },
    }]);
    checkXml(svg);
    expect(svg).toContain('run &lt;1&gt; &amp; &quot;two&quot;');
    expect(svg).toContain('a &lt;b&gt;bold&lt;/b&gt; &amp; &apos;quoted&apos; label');
    expect(svg).toContain('&lt;script&gt;');
    expect(svg).not.toContain('<b>');
    expect(svg).not.toContain('<script>');
    expect(svg).toContain('x&amp;y 5 ms');
    expect(svg).toContain('a&lt;b 3 ms');
  });

  it('handles zero rounds, one round, zero durations, non-finite numbers and long labels', () => {
    const long = `cold-mixed (median rep) ${'very long label '.repeat(40)}end`;
    const edge: ChartMigration[] = [
      { label: 'no rounds', rounds: [], downtimeMs: 0, totalTimeMs: 0 },
      { label: 'one round', rounds: [{ round: 1, pagesSent: 10, durationMs: 0, stopAndCopy: true }], downtimeMs: 0, totalTimeMs: 0 },
      { label: 'all zero', rounds: [{ round: 1, pagesSent: 0, durationMs: 0 }, { round: 2, pagesSent: 0, durationMs: 0 }], downtimeMs: 0, totalTimeMs: 0, downtimeSplit: { a: 0, b: 0 }, baselines: { z: 0 } },
      {
        label: 'non-finite',
        rounds: [
          { round: NaN, pagesSent: NaN, durationMs: Infinity, throttlePercent: NaN },
          { round: 2, pagesSent: -Infinity, durationMs: -5, stopAndCopy: true, throttlePercent: Infinity },
        ],
        downtimeMs: NaN,
        totalTimeMs: Infinity,
        downtimeSplit: { finalSyncMs: NaN, transferMs: Infinity, verifyMs: 1 },
        baselines: { nan: NaN, inf: Infinity, ok: 10 },
      },
      { label: long, rounds: Array.from({ length: 120 }, (_, i) => ({ round: i + 1, pagesSent: 1000 - i, durationMs: i / 7 })), downtimeMs: 1e-9, totalTimeMs: 1e12 },
    ];
    const svg = renderRunSvg('edge cases', edge);
    checkXml(svg);
    expectFiniteGeometry(svg);
    expect(svg).toContain('no rounds');
    expect(count(svg, /class="bar-pages[ "]/g)).toBe(0 + 1 + 2 + 2 + 120);
    expect(count(svg, /class="bar-duration[ "]/g)).toBe(0 + 1 + 2 + 2 + 120);
    // The long label is shortened on screen; the whole of it is kept in a tooltip.
    const visible = [...svg.matchAll(/<\/title>(cold-mixed[^<]*)<\/text>/g)].map((m) => m[1]!);
    expect(visible).toHaveLength(1);
    expect(visible[0]!.length).toBeLessThan(120);
    expect(visible[0]!.endsWith('…')).toBe(true);
    expect(svg).toContain(`<title>${long}</title>`);
    // Non-finite baselines and parts are left out, finite ones kept.
    expect(svg).not.toMatch(/>nan</);
    expect(svg).toContain('verify 1 ms');

    for (const m of edge) {
      const single = renderRunSvg(m.label, [m]);
      checkXml(single);
      expectFiniteGeometry(single);
    }
    const empty = renderRunSvg('', []);
    checkXml(empty);
    expectFiniteGeometry(empty);
    expect(empty).toContain('no migrations');
  });
});

describe('niceTicks', () => {
  it('steps by 1, 2 or 5 times a power of ten from 0 to at least max', () => {
    expect(niceTicks(157301)).toEqual([0, 50000, 100000, 150000, 200000]);
    expect(niceTicks(2951.23)).toEqual([0, 1000, 2000, 3000]);
    expect(niceTicks(188.5)).toEqual([0, 50, 100, 150, 200]);
    expect(niceTicks(100)).toEqual([0, 20, 40, 60, 80, 100]);
    expect(niceTicks(0.37)).toEqual([0, 0.1, 0.2, 0.3, 0.4]);
    expect(niceTicks(3, 5, true)).toEqual([0, 1, 2, 3]);
    for (const max of [1e-6, 0.9, 1, 7, 13, 99.9, 1001, 7.3e9]) {
      const ticks = niceTicks(max);
      expect(ticks[0]).toBe(0);
      expect(ticks.at(-1)!).toBeGreaterThanOrEqual(max);
      expect(ticks.length).toBeGreaterThanOrEqual(2);
      expect(ticks.length).toBeLessThanOrEqual(11);
      const step = ticks[1]!;
      const mantissa = step / 10 ** Math.floor(Math.log10(step));
      expect([1, 2, 5]).toContainEqual(Number(mantissa.toPrecision(6)));
      ticks.forEach((t, i) => expect(t).toBeCloseTo(i * step, 9));
    }
  });

  it('gives [0, 1] for zero, negative and non-finite maxima', () => {
    for (const max of [0, -5, NaN, Infinity, -Infinity]) expect(niceTicks(max)).toEqual([0, 1]);
  });
});

describe('the test\'s XML checker', () => {
  it('rejects what is not well-formed', () => {
    expect(() => checkXml('<svg><g></svg>')).toThrow(/closes/);
    expect(() => checkXml('<svg><text>a & b</text></svg>')).toThrow(/bare &/);
    expect(() => checkXml('<svg><text>a <b c</text></svg>')).toThrow(/malformed/);
    expect(() => checkXml('<svg x=1/>')).toThrow(/malformed/);
    expect(() => checkXml('<svg x="1" x="2"/>')).toThrow(/duplicate/);
    expect(() => checkXml('<svg/><svg/>')).toThrow(/root/);
    expect(() => checkXml('<svg><g>')).toThrow(/unclosed/);
    expect(checkXml('<?xml version="1.0"?>\n<svg a=\'&amp;\'><!-- c --><t>&lt;&#60;</t></svg>\n')).toEqual(['svg', 't']);
  });
});
