// End-to-end test of the dashboard (src/http/dashboard.html) in a real
// headless Chromium against `cchc demo` (in-process Kafka, SQLite).
//
// Run it with scripts/browser-test.sh, which installs Chromium and the npm
// package and builds cchc first. Directly: `node --test dashboard.test.mjs`
// here, with target/debug/cchc built.
//
// Environment: BROWSER_TEST_BIN (default ../../target/debug/cchc; not CCHC_*:
// the pipeline reads those as configuration), CHROMIUM_PATH
// (default /usr/bin/chromium), BROWSER_TEST_EVENTS (default 20000).
// Output: var/browser-test/dashboard.png (screenshot), demo.log (the demo's
// output), failure.png (the page when a test failed).
//
// The page is opened as soon as /health answers, while the demo is still
// producing its events, so the test can see a value change and alerts arrive
// live; a second page opened at the end must list the alerts already
// published (read from GET /api/v1/alerts). Once the demo has produced everything, the test
// produces one event of its own (`cchc import` into the demo's in-process
// broker) and watches its commune's cell move by exactly one.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = process.env.BROWSER_TEST_BIN || path.join(ROOT, 'target', 'debug', 'cchc');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const EVENTS = process.env.BROWSER_TEST_EVENTS || '20000';
const OUT = path.join(ROOT, 'var', 'browser-test');
const TOKEN = 'demo-read-token';
// Today's structure: Cần Thơ (92) over the three wards of Long Mỹ.
const UNIT = '92';
const INDICATORS = [
  'online_rate',
  'on_time_rate',
  'satisfaction_rate',
  'electronic_registration_rate',
  'digital_signature_rate',
  'digitization_rate',
];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `promise`'s value, or null after `ms` (without keeping the process alive). */
function within(promise, ms) {
  let timer;
  const timeout = new Promise((r) => {
    timer = setTimeout(() => r(null), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** An error that ends `until` at once. */
class Fatal extends Error {}

/** Polls `fn` until it returns something truthy (errors count as "not yet"). */
async function until(what, fn, { timeout = 30_000, interval = 100 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      if (e instanceof Fatal) throw e;
      last = e;
    }
    if (Date.now() > deadline) {
      const why = last instanceof Error ? `: ${last.message}` : '';
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${why}`);
    }
    await sleep(interval);
  }
}

// ---- shared state: one demo, one browser, one page for the whole file -----
let base;
let demo;
let demoExit; // promise of {code, signal}
let demoExited = false;
let demoOut = ''; // stdout
let demoAll = ''; // stdout and stderr
let log;
let browser;
let page;
let steps = 0; // tests defined
let passed = 0; // tests passed
const pageErrors = [];
const startedAt = Date.now();
const since = () => `${((Date.now() - startedAt) / 1000).toFixed(1)} s`;

async function api(route) {
  const res = await fetch(base + route, { headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.equal(res.status, 200, `${route} answered ${res.status}`);
  return res.json();
}

/** The last lines the demo wrote. */
function demoTail() {
  return demoAll.trimEnd().split('\n').slice(-10).join('\n');
}

/** The alerts the demo printed, in publication order. */
function demoAlerts() {
  return demoOut
    .split('\n')
    .filter((l) => l.startsWith('alert: '))
    .map((l) => JSON.parse(l.slice('alert: '.length)));
}

const cell = (code, indicator) => page.locator(`td[data-commune="${code}"][data-indicator="${indicator}"]`);

/** Every cell of the page's table as {numerator, denominator, standing}. */
function pageCells() {
  return page.$$eval('#indicators td[data-indicator]', (tds) =>
    Object.fromEntries(
      tds.map((td) => [
        `${td.dataset.commune}/${td.dataset.indicator}`,
        `${td.dataset.numerator}/${td.dataset.denominator} ${td.dataset.standing} → ${td.dataset.projected} ±${td.dataset.missesAllowed}`,
      ]),
    ),
  );
}

// A cell as the API gives it (with outlook=true): counts, standing, the
// projection to the period's end and the misses still allowed.
function apiCells(answer) {
  const out = {};
  const cell = (i, outlook) => {
    const o = outlook.indicators.find((x) => x.indicator === i.indicator);
    const p = o.projection && o.projection.rate != null ? o.projection.rate : '';
    return `${i.numerator}/${i.denominator} ${i.standing} → ${p} ±${o.misses_allowed ?? ''}`;
  };
  for (const c of answer.communes) {
    for (const i of c.indicators) out[`${c.commune.code}/${i.indicator}`] = cell(i, c.outlook);
  }
  for (const i of answer.rollup.indicators) out[`${answer.unit.code}/${i.indicator}`] = cell(i, answer.rollup.outlook);
  return out;
}

before(async () => {
  assert.ok(fs.existsSync(BIN), `${BIN} is missing: cargo build --bin cchc`);
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`);
  fs.mkdirSync(OUT, { recursive: true });
  for (const f of ['dashboard.png', 'failure.png']) fs.rmSync(path.join(OUT, f), { force: true });
  log = fs.createWriteStream(path.join(OUT, 'demo.log'));

  // The browser first, so the page can open the moment the demo answers.
  browser = await chromium.launch({ executablePath: CHROMIUM });
  page = await browser.newPage({ viewport: { width: 1440, height: 900 }, locale: 'vi-VN' });
  page.on('pageerror', (e) => pageErrors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`);
  });

  // Port 0: the demo binds a free port and prints its address.
  demo = spawn(
    BIN,
    ['demo', '--events', EVENTS, '--listen', '127.0.0.1:0', '--database', 'var/browser-test.sqlite'],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  // Never leave the demo behind, whatever happens to this process.
  process.on('exit', () => {
    if (!demoExited) demo.kill('SIGKILL');
  });
  demoExit = new Promise((resolve) =>
    demo.on('exit', (code, signal) => {
      demoExited = true;
      resolve({ code, signal });
    }),
  );
  demo.stdout.on('data', (b) => {
    demoOut += b.toString();
    demoAll += b.toString();
    log.write(b);
  });
  demo.stderr.on('data', (b) => {
    demoAll += b.toString();
    log.write(b);
  });

  await until(
    'the demo to print its address',
    async () => {
      if (demoExited) throw new Fatal(`the demo exited early; see var/browser-test/demo.log:\n${demoTail()}`);
      const printed = demoOut.match(/^dashboard: http:\/\/([^/]+)\//m);
      if (printed) base = `http://${printed[1]}`;
      return printed;
    },
    { timeout: 60_000, interval: 50 },
  );
  await until(
    `GET ${base}/health`,
    async () => {
      if (demoExited) throw new Fatal(`the demo exited early; see var/browser-test/demo.log:\n${demoTail()}`);
      const res = await fetch(`${base}/health`);
      return res.ok;
    },
    { timeout: 60_000, interval: 50 },
  );
  const healthAt = since();
  await page.goto(`${base}/?token=${TOKEN}`);
  console.log(`demo answered /health at ${healthAt}, page opened at ${since()}`);
});

after(async () => {
  if (passed < steps && page) await page.screenshot({ path: path.join(OUT, 'failure.png'), fullPage: true }).catch(() => {});
  await browser?.close().catch(() => {});
  if (demo && !demoExited) {
    demo.kill('SIGTERM');
    if (!(await within(demoExit, 15_000))) demo.kill('SIGKILL');
  }
  log?.end();
});

describe('dashboard against cchc demo', () => {
  let firstText;

  // Counts passes: after() keeps failure.png unless every test passed.
  const step = (name, fn, timeout = 60_000) => {
    steps++;
    it(name, { timeout }, async (t) => {
      await fn(t);
      passed++;
    });
  };

  step('shows today\'s three wards and their roll-up, with numbers', async () => {
    await page.waitForSelector('#communes tr[data-commune] td[data-indicator]', { timeout: 30_000 });
    // The roll-up cell read as early as possible: the demo is still producing.
    firstText = await cell(UNIT, 'online_rate').innerText();

    const answer = await api(`/api/v1/units/${UNIT}/communes?window=ytd`);
    const expected = answer.communes.map((c) => c.commune.code);
    assert.equal(expected.length, 3, 'the demo configuration has three wards under 92 today');
    const rows = await page.$$eval('#communes tr[data-commune]', (trs) => trs.map((tr) => tr.dataset.commune));
    assert.deepEqual(rows, expected);

    for (const code of [...expected, UNIT]) {
      for (const indicator of INDICATORS) {
        const text = await cell(code, indicator).locator('.frac').innerText();
        assert.match(text, /^[\d.]+\/[\d.]+$/, `cell ${code}/${indicator} shows numerator/denominator`);
      }
    }
    const rollupName = await page.locator('#rollup th').innerText();
    assert.match(rollupName, /Cần Thơ/);
    const heads = await page.locator('#indicators thead').innerText();
    assert.match(heads, /Xã\/Phường\s*\(commune\)/);
    assert.match(heads, /Tỷ lệ giải quyết đúng hạn\s*\(on-time rate\)/);
    assert.match(heads, /Tỷ lệ hồ sơ trực tuyến\s*\(online rate\)/);
    const legend = await page.locator('#legend').innerText();
    for (const word of ['met', 'breached', 'too few cases', 'no data']) assert.ok(legend.includes(word), `legend names ${word}`);
  });

  step('a value changes while the demo is producing (projections stream, no polling)', async (t) => {
    assert.ok(firstText, 'the first test read the cell');
    const changed = await until(
      'the roll-up online_rate cell to change',
      async () => {
        const now = await cell(UNIT, 'online_rate').innerText();
        return now !== firstText && now;
      },
      { timeout: 30_000, interval: 250 },
    ).catch((e) => {
      const done = demoOut.includes('events projected');
      throw new Error(`${e.message} (first read ${JSON.stringify(firstText)}; demo ${done ? 'had already finished' : 'still running'})`);
    });
    const flat = (s) => `"${s.replace(/\s+/g, ' ')}"`;
    t.diagnostic(`roll-up online_rate: ${flat(firstText)} -> ${flat(changed)} at ${since()}`);
    // The change came from the stream's notes, not from the fallback poll.
    const live = await page.evaluate(() => ({
      changes: document.querySelector('#live').dataset.changes,
      seen: Number(document.body.dataset.changesSeen || 0),
      polls: Number(document.body.dataset.polls || 0),
    }));
    t.diagnostic(`projections stream: ${JSON.stringify(live)}`);
    assert.equal(live.changes, 'open', 'the projections stream is open');
    assert.ok(live.seen > 0, 'change notes arrived');
    assert.equal(live.polls, 0, 'no fallback poll while the stream is open');
  });

  step(
    'shows the final numbers of the API once the demo has projected every event',
    async (t) => {
      await until(
        'the demo to print its report (`events projected`)',
        () => {
          if (demoExited) throw new Fatal(`the demo exited early; see var/browser-test/demo.log:\n${demoTail()}`);
          return demoOut.includes('events projected');
        },
        { timeout: 180_000, interval: 200 },
      );
      t.diagnostic(`demo report printed at ${since()}: ${demoOut.match(/^.*events projected.*$/m)[0]}`);
      // The page fetches again on every change note: soon it shows what the
      // API answers (asked again each time: the clock tick may still mark cases overdue).
      let last;
      let expected;
      await until(
        'every cell to match the API',
        async () => {
          expected = apiCells(await api(`/api/v1/units/${UNIT}/communes?window=ytd&outlook=true`));
          last = await pageCells();
          return JSON.stringify(last) === JSON.stringify(expected);
        },
        { timeout: 15_000, interval: 250 },
      ).catch((e) => {
        assert.deepEqual(last, expected, e.message);
      });
      assert.equal(Object.keys(expected).length, 4 * INDICATORS.length, 'three wards and the roll-up, every indicator each');
      const standings = new Set(Object.values(expected).map((v) => v.split(' ')[1]));
      const projected = Object.values(expected).filter((v) => !/→ ±/.test(v) && !/→  /.test(v)).length;
      t.diagnostic(`${projected} cells with a projection to the year's end`);
      assert.ok(projected > 0, 'the ytd cells show where they are heading');
      t.diagnostic(`standings on the page: ${[...standings].join(', ')}`);
      assert.ok(standings.has('met') && standings.has('breached'), 'the demo has both met and breached cells');
      const colors = await page.evaluate(() => {
        const bg = (s) => getComputedStyle(document.querySelector(`td[data-standing="${s}"]`)).backgroundColor;
        return { met: bg('met'), breached: bg('breached') };
      });
      const [mr, mg] = colors.met.match(/\d+/g).map(Number);
      const [br, bgreen] = colors.breached.match(/\d+/g).map(Number);
      assert.ok(mg > mr, `met cells are green (${colors.met})`);
      assert.ok(br > bgreen, `breached cells are red (${colors.breached})`);
    },
    200_000,
  );

  step('an event produced by hand moves its cell by exactly one, live', async (t) => {
    // The demo has produced everything: the page is still until this event.
    const broker = demoAll.match(/bootstrap=(\S+)/);
    assert.ok(broker, 'the demo logs the address of its in-process broker');
    const code = '31471';
    const frac = () => cell(code, 'online_rate').locator('.frac').innerText();
    const number = (s) => Number(s.replace(/\./g, ''));
    const before = await frac();
    const [num, den] = before.split('/').map(number);
    const stamp = Date.now();
    const now = new Date(stamp);
    const event = {
      event_id: `browser-test-${stamp}`,
      event_type: 'case.received',
      schema_version: 1,
      occurred_at: now.toISOString(),
      commune_code: code,
      case_id: `browser-test-case-${stamp}`,
      data: {
        procedure_code: '1.001234',
        channel: 'online',
        online_level: 'full',
        due_at: new Date(stamp + 5 * 86_400_000).toISOString(),
        registered_electronically: true,
      },
    };
    const file = path.join(OUT, 'event.jsonl');
    fs.writeFileSync(file, `${JSON.stringify(event)}\n`);
    const sent = spawnSync(BIN, ['import', file], {
      cwd: ROOT,
      env: { ...process.env, CCHC_KAFKA__BOOTSTRAP_SERVERS: broker[1], RUST_LOG: 'warn' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(sent.status, 0, `cchc import failed: ${sent.stdout}${sent.stderr}`);
    const after = await until(
      `cell ${code}/online_rate to go from ${before} to ${num + 1}/${den + 1}`,
      async () => {
        const text = await frac();
        const [n, d] = text.split('/').map(number);
        return n === num + 1 && d === den + 1 && text;
      },
      { timeout: 30_000, interval: 100 },
    );
    t.diagnostic(`${code} online_rate: ${before} -> ${after} at ${since()}, without a reload`);
  });

  step('lists live alerts from the stream, newest first', async (t) => {
    await page.waitForSelector('#alerts li[data-alert-id]', { timeout: 30_000 });
    const shown = await page.$$eval('#alerts li[data-alert-id]', (lis) => lis.map((li) => li.dataset.alertId));
    const printed = demoAlerts().map((a) => a.alert_id);
    t.diagnostic(`${shown.length} alerts on the page, ${printed.length} printed by the demo`);
    // Oldest first, the page's alerts are a subsequence of the demo's, in order.
    let k = 0;
    for (const id of [...shown].reverse()) {
      const at = printed.indexOf(id, k);
      assert.ok(at >= 0, `alert ${id} on the page was published by the demo, in this order`);
      k = at + 1;
    }
    const newest = demoAlerts().find((a) => a.alert_id === shown[0]);
    const text = await page.locator('#alerts li').first().innerText();
    assert.ok(text.includes(newest.commune_name), `the alert names ${newest.commune_name}: ${text}`);
    assert.match(text, newest.event_type === 'indicator.breached' ? /breached/ : /recovered/);
    assert.equal(await page.locator('#live').getAttribute('data-state'), 'open');
  });

  step('shows freshness: event time, commit time and lag', async () => {
    const f = page.locator('#freshness');
    const text = await f.innerText();
    assert.match(text, /data as of/);
    assert.match(text, /committed/);
    assert.match(text, /lag/);
    const eventTime = await f.getAttribute('data-event-time');
    assert.ok(!Number.isNaN(Date.parse(eventTime)), `event_time ${eventTime}`);
    assert.ok(!Number.isNaN(Date.parse(await f.getAttribute('data-committed-at'))));
    assert.match(await f.getAttribute('data-lag'), /^\d+$/);
  });

  step('draws the town on-time and online rates, cumulative, with their targets', async () => {
    for (const series of ['on_time_rate', 'online_rate']) {
      const points = Number(await page.locator(`#chart path[data-series="${series}"]`).getAttribute('data-points'));
      assert.ok(points > 10, `${series}: ${points} points`);
      assert.equal(await page.locator(`#chart line[data-target="${series}"]`).count(), 1, `${series} target line`);
      // The cumulative rate on the last day is the roll-up's year-to-date rate.
      const latest = await page.locator(`#chart [data-latest="${series}"]`).textContent();
      const rate = await cell(UNIT, series).locator('.rate').innerText();
      assert.ok(latest.includes(rate), `chart ends at ${latest}, the roll-up shows ${rate}`);
    }
    const targets = await page.locator('#chart .target-label').allTextContents();
    assert.ok(targets.some((s) => s.includes('99%')), `targets: ${targets}`);
    assert.ok(targets.some((s) => s.includes('70%')), `targets: ${targets}`);
  });

  step('switches the window', async () => {
    await page.click('button[data-window="qtd"]');
    await page.waitForSelector('#indicators[data-window="qtd"]', { timeout: 10_000 });
    assert.equal(await page.locator('#communes tr[data-commune]').count(), 3);
    assert.match(page.url(), /window=qtd/);
    assert.match(page.url(), /token=demo-read-token/);
    await page.click('button[data-window="ytd"]');
    await page.waitForSelector('#indicators[data-window="ytd"]', { timeout: 10_000 });
  });

  step('lists the cases coming due per commune, as the API does', async (t) => {
    // Two cases sent over HTTP (the demo's producer token), due tomorrow
    // and the day after, in Phường Trà Lồng.
    const stamp = Date.now();
    const lines = [1, 2].map((days, n) => JSON.stringify({
      event_id: `browser-due-${stamp}-${n}`, event_type: 'case.received', schema_version: 1,
      occurred_at: new Date(stamp).toISOString(), commune_code: '31480', case_id: `browser-due-${stamp}-${n}`,
      data: { procedure_code: '1.001234', channel: 'in_person', online_level: 'none',
              due_at: new Date(stamp + days * 86_400_000).toISOString(), registered_electronically: true },
    })).join('\n');
    const sent = await fetch(`${base}/api/v1/events`, {
      method: 'POST', body: lines,
      headers: { Authorization: 'Bearer demo-producer-token', 'Content-Type': 'application/x-ndjson' },
    });
    const written = await sent.json();
    assert.equal(sent.status, 200, JSON.stringify(written));
    assert.equal(written.accepted, 2);
    await until('the two cases coming due on the page', async () =>
      page.locator('#coming-due tbody tr[data-commune="31480"]').count().then((n) => n === 1));
    const res = await fetch(`${base}/api/v1/units/${UNIT}/coming-due?limit=200`, { headers: { Authorization: `Bearer ${TOKEN}` } });
    assert.equal(res.status, 200);
    const want = await res.json();
    await page.waitForFunction((n) => document.body.dataset.comingDue === String(n), want.total, { timeout: 10_000 });
    const rows = await page.$$eval('#coming-due tbody tr', (trs) => trs.map((tr) => [tr.dataset.commune, tr.children[1].textContent]));
    assert.deepEqual(rows.map((r) => r[0]), want.communes.map((c) => c.commune.code));
    assert.deepEqual(rows.map((r) => Number(r[1].replace(/\D/g, ''))), want.communes.map((c) => c.due_today));
    assert.equal(await page.locator('#coming-due-empty').isHidden(), want.total > 0);
    // Beside the counts, the on-time budget the API gives (ytd: the page's window).
    const budgets = await page.$$eval('#coming-due tbody td.budget', (tds) => tds.map((td) => [td.textContent, td.dataset.atRisk]));
    assert.deepEqual(budgets.map((b) => b[1]), want.communes.map((c) => String(c.on_time.at_risk)));
    assert.deepEqual(
      budgets.map((b) => (/^\d/.test(b[0]) ? Number(b[0].replace(/\D/g, '')) : null)),
      want.communes.map((c) => c.on_time.misses_allowed),
    );
    t.diagnostic(`${want.total} open cases coming due in ${want.communes.length} communes, ${want.communes.filter((c) => c.on_time.at_risk).length} at risk`);
  });

  step('takes a screenshot', async (t) => {
    await sleep(1_700); // let the change highlights fade
    const file = path.join(OUT, 'dashboard.png');
    await page.screenshot({ path: file, fullPage: true });
    assert.ok(fs.statSync(file).size > 20_000);
    t.diagnostic(`screenshot: ${path.relative(ROOT, file)}`);
  });

  step('a page opened later lists the communes in breach now and the alerts already published, newest first', async (t) => {
    const before = demoAlerts();
    assert.ok(before.length > 0, 'the demo has published alerts');
    const later = await browser.newPage();
    const errors = [];
    later.on('pageerror', (e) => errors.push(String(e)));
    try {
      await later.goto(`${base}/?token=${TOKEN}`);
      await later.waitForSelector('#alerts li[data-alert-id]', { timeout: 10_000 });
      // The history is drawn in one go once read: let it land.
      await later.waitForFunction(
        (n) => document.querySelectorAll('#alerts li[data-alert-id]').length >= n,
        Math.min(200, before.length),
        { timeout: 10_000 },
      );
      const shown = await later.$$eval('#alerts li[data-alert-id]', (lis) => lis.map((li) => li.dataset.alertId));
      const printed = demoAlerts().map((a) => a.alert_id);
      t.diagnostic(`${shown.length} alerts listed on opening, ${printed.length} published`);
      assert.deepEqual(shown, printed.slice(-shown.length).reverse(), 'the latest published, newest first');
      assert.match(await later.locator('#alert-count').innerText(), new RegExp(`\\(${shown.length}\\)`));
      assert.ok(await later.locator('#alerts-empty').isHidden());
      // Above them, the communes in breach now, as the API lists them.
      const res = await fetch(`${base}/api/v1/breaches?unit=${UNIT}`, { headers: { Authorization: `Bearer ${TOKEN}` } });
      assert.equal(res.status, 200);
      const now = await res.json();
      await later.waitForFunction((n) => document.body.dataset.breaches === String(n), now.breaches.length, { timeout: 10_000 });
      const listed = await later.$$eval('#breaches li', (lis) => lis.map((li) => `${li.dataset.commune}/${li.dataset.indicator}/${li.dataset.window}`));
      assert.deepEqual(listed, now.breaches.map((b) => `${b.commune.code}/${b.indicator}/${b.window}`));
      assert.equal(await later.locator('#breaches-empty').isHidden(), listed.length > 0);
      t.diagnostic(`${listed.length} breaches in ${now.communes_in_breach} communes listed on opening`);
      // And those at risk now.
      await later.waitForFunction((n) => document.body.dataset.risks === String(n), now.at_risk.length, { timeout: 10_000 });
      const risks = await later.$$eval('#risks li', (lis) => lis.map((li) => `${li.dataset.commune}/${li.dataset.indicator}/${li.dataset.window}`));
      assert.deepEqual(risks, now.at_risk.map((b) => `${b.commune.code}/${b.indicator}/${b.window}`));
      assert.equal(await later.locator('#risks-empty').isHidden(), risks.length > 0);
      t.diagnostic(`${risks.length} at risk in ${now.communes_at_risk} communes listed on opening`);
      assert.deepEqual(errors, []);
    } finally {
      await later.close();
    }
  });

  step('says so when the token is missing', async () => {
    const bare = await browser.newPage();
    try {
      await bare.goto(`${base}/`);
      await bare.waitForSelector('#problem:not([hidden])', { timeout: 10_000 });
      assert.match(await bare.locator('#problem').innerText(), /token/);
    } finally {
      await bare.close();
    }
  });

  step('had no script errors', async () => {
    assert.deepEqual(pageErrors, []);
  });

  step('the demo stops cleanly on SIGTERM', async () => {
    await browser.close();
    browser = null;
    demo.kill('SIGTERM');
    const exit = await within(demoExit, 20_000);
    assert.ok(exit, 'the demo stopped within 20 s of SIGTERM');
    assert.equal(exit.code, 0, `the demo exited with ${JSON.stringify(exit)}`);
  });
});
