// A person at a browser, for the sign-in end-to-end tests: used as
// `$BROWSER` by `llm-proxy login`, which runs `$BROWSER <url>` and keeps
// polling. Drives /usr/bin/chromium (headless, fresh profile) through
// playwright-core from the proxy's sign-in URL to the end of the login.
//
// Environment:
//   E2E_MODE      `oidc` (sign in at the provider from tests/e2e/idp.mjs) or
//                 `password` (the proxy's own page)
//   E2E_LOGIN     the provider login name, or the email for the password page
//   E2E_PASSWORD  the password (oidc: any, the provider takes any)
//   E2E_EXPECT    `approved` (the login is approved at the end) or `refused`
//                 (a page answering 401 or 403 says why)
//   E2E_REPORT    where to write {ok, step, text, code_seen, status} (status:
//                 the HTTP status of the last page); on failure a screenshot
//                 goes next to it (same name, `.png`)
//
// The proxy's pages are found by element ids: `user-code` (the code shown,
// which must equal `user_code` in the URL), `email`, `password`, `sign-in`
// (the password form's button) and `approve`. The login is approved once a
// page with nothing left to do follows the approval (or, on the password
// page, the sign-in, which is the approval there). The provider's development
// pages are found by their form fields. Only loopback addresses are
// reachable: anything else the pages ask for is refused, so the run never
// leaves the machine.
//
// Exit status: 0 when the expectation held, 1 otherwise.

import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const MAX_PAGES = 16;
const STEP_TIMEOUT_MS = 20_000;
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

const url = process.argv[2];
const mode = process.env.E2E_MODE ?? 'password';
const login = process.env.E2E_LOGIN ?? '';
const password = process.env.E2E_PASSWORD ?? 'any-password';
const expect = process.env.E2E_EXPECT ?? 'approved';
const reportPath = process.env.E2E_REPORT;

const report = { ok: false, step: 'start', text: '', code_seen: null, status: null };

// Written whole, then renamed: whoever waits for the file never reads half of it.
function writeReport() {
  if (!reportPath) return;
  writeFileSync(`${reportPath}.partial`, `${JSON.stringify(report)}\n`);
  renameSync(`${reportPath}.partial`, reportPath);
}

class Failure extends Error {}

function fail(step, text) {
  report.step = step;
  throw new Failure(text);
}

async function visibleText(page) {
  const text = await page.locator('body').innerText({ timeout: 2_000 }).catch(() => '');
  return text.replace(/\s+/g, ' ').trim().slice(0, 2_000);
}

async function exists(page, selector) {
  return (await page.locator(selector).count()) > 0;
}

/** Clicks `selector` and waits for the page it leads to; returns its response. */
async function submit(page, selector) {
  const [response] = await Promise.all([
    page.waitForNavigation({ waitUntil: 'domcontentloaded', timeout: STEP_TIMEOUT_MS }),
    page.click(selector, { timeout: STEP_TIMEOUT_MS }),
  ]);
  return response;
}

/** Reads `#user-code` if the page shows one and checks it against the URL. */
async function checkCode(page, expected) {
  if (!(await exists(page, '#user-code'))) return;
  const shown = (await page.locator('#user-code').first().innerText()).trim();
  report.code_seen = shown;
  if (expected !== null && shown !== expected) {
    fail('check-code', `the page shows the code ${JSON.stringify(shown)}, the URL has ${JSON.stringify(expected)}`);
  }
}

async function drive(page) {
  if (!url) fail('start', 'usage: browser.mjs <url>');
  if (!['oidc', 'password'].includes(mode)) fail('start', `E2E_MODE must be oidc or password, not ${mode}`);
  if (!['approved', 'refused'].includes(expect)) fail('start', `E2E_EXPECT must be approved or refused, not ${expect}`);
  const expectedCode = new URL(url).searchParams.get('user_code');

  report.step = 'open';
  let response = await page.goto(url, { waitUntil: 'domcontentloaded', timeout: STEP_TIMEOUT_MS });
  let signedIn = false;
  let approved = false;
  for (let pages = 0; pages < MAX_PAGES; pages += 1) {
    const status = response ? response.status() : 0;
    report.status = status;
    const where = new URL(page.url());
    await checkCode(page, expectedCode);
    if (status === 401 || status === 403) {
      report.text = await visibleText(page);
      if (expect === 'refused') return;
      fail(report.step, `${where.pathname} answered ${status}`);
    }
    if (status >= 400 || status === 0) {
      report.text = await visibleText(page);
      fail(report.step, `${where.pathname} answered ${status || 'nothing'}`);
    }

    if (await exists(page, '#approve')) {
      if (approved) fail('approve', 'the approval page came back after approving');
      if (expectedCode !== null && report.code_seen === null) {
        fail('approve', 'the approval page does not show the code (#user-code)');
      }
      report.step = 'approve';
      response = await submit(page, '#approve');
      approved = true;
    } else if (await exists(page, '#email') && await exists(page, '#password')) {
      if (mode !== 'password') fail('sign-in', 'the proxy shows its password page, but E2E_MODE is oidc');
      if (signedIn) {
        report.text = await visibleText(page);
        fail('sign-in', 'the password page came back after signing in');
      }
      report.step = 'sign-in';
      await page.fill('#email', login);
      await page.fill('#password', password);
      response = await submit(page, '#sign-in');
      signedIn = true;
    } else if (await exists(page, 'form input[name="prompt"][value="login"]')) {
      if (mode !== 'oidc') fail('provider-login', 'the identity provider asks for a login, but E2E_MODE is password');
      if (signedIn) fail('provider-login', 'the identity provider asked for a login twice');
      report.step = 'provider-login';
      await page.fill('input[name="login"]', login);
      await page.fill('input[name="password"]', password);
      response = await submit(page, 'form button[type="submit"]');
      signedIn = true;
    } else if (await exists(page, 'form input[name="prompt"][value="consent"]')) {
      report.step = 'provider-consent';
      response = await submit(page, 'form button[type="submit"]');
    } else {
      report.text = await visibleText(page);
      // The password page is itself the approval (it shows the code); with a
      // provider, the proxy asks for the approval after the callback.
      const finished = approved || (mode === 'password' && signedIn);
      if (finished && expect === 'approved') {
        report.step = 'done';
        return;
      }
      fail(report.step, `stuck at ${where.pathname}: nothing to fill or press`);
    }
  }
  fail(report.step, `still going after ${MAX_PAGES} pages`);
}

async function main() {
  const profile = mkdtempSync(join(tmpdir(), 'llm-proxy-e2e-chromium-'));
  let context;
  let page;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    await context.route('**/*', (route) => {
      const { hostname } = new URL(route.request().url());
      return LOOPBACK.has(hostname) ? route.continue() : route.abort('blockedbyclient');
    });
    page = context.pages()[0] ?? await context.newPage();
    await drive(page);
    report.ok = true;
  } catch (error) {
    report.ok = false;
    report.text = `${error.message}${report.text ? ` | page: ${report.text}` : ''}`;
    if (!(error instanceof Failure) && report.step === 'start') report.step = 'launch';
  }
  if (!report.ok) {
    process.stderr.write(`browser.mjs: failed at ${report.step}: ${report.text}\n`);
    if (page && reportPath) {
      await page.screenshot({ path: reportPath.replace(/(\.json)?$/, '.png'), fullPage: true }).catch(() => {});
    }
  }
  writeReport();
  await context?.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  process.exit(report.ok ? 0 : 1);
}

await main();
