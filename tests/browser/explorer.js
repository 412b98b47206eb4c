// Drives the GuidanceExplorer notebook in JupyterLab with headless Debian chromium (playwright-core).
// Usage: node explorer.js <lab url without token> <token> <notebook name> <screenshot dir>
// Env: HQG_BROWSER_NODE_DIR (where playwright-core is installed), HQG_CHROMIUM (browser binary).
// Prints one JSON line prefixed "RESULT " with sha256 hashes of the explorer image before/after the slider move.
const path = require('path'), fs = require('fs'), os = require('os'), crypto = require('crypto');
const nodeDir = process.env.HQG_BROWSER_NODE_DIR || '/tmp/hqg-browser';
const { chromium } = require(path.join(nodeDir, 'node_modules', 'playwright-core'));
const [base, token, nbName, shotDir] = process.argv.slice(2);
const log = (...a) => console.log(`[${(process.uptime()).toFixed(1)}s]`, ...a);

// sha256 + size of the bytes behind the biggest rendered widget image (the explorer figure; thumbnails are 64 px)
async function mainImage(page) {
  const b64 = await page.evaluate(async () => {
    const imgs = [...document.querySelectorAll('.jp-OutputArea .widget-image')]
      .filter(i => i.complete && i.naturalWidth > 0).sort((a, b) => b.naturalWidth - a.naturalWidth);
    if (!imgs.length) return null;
    const buf = await (await fetch(imgs[0].src)).arrayBuffer();
    let s = ''; const u = new Uint8Array(buf);
    for (let i = 0; i < u.length; i += 8192) s += String.fromCharCode(...u.subarray(i, i + 8192));
    return btoa(s);
  });
  if (b64 === null) return null;
  const bytes = Buffer.from(b64, 'base64');
  return { sha: crypto.createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length };
}

async function waitFor(fn, what, timeoutMs) {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise(r => setTimeout(r, 250));
  }
}

(async () => {
  const userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hqg-chromium-'));
  const browser = await chromium.launchPersistentContext(userDir, {
    executablePath: process.env.HQG_CHROMIUM || '/usr/bin/chromium', headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 1400 }, timeout: 60000,
  });
  const result = {};
  try {
    const page = browser.pages()[0] || await browser.newPage();
    page.setDefaultTimeout(60000);
    await page.goto(`${base}/lab/tree/${nbName}?token=${token}`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('.jp-Notebook .jp-Cell', { timeout: 90000 });
    // wait until the status bar reports the kernel idle, e.g. "Python 3 (ipykernel) | Idle"
    await waitFor(async () => /\|\s*Idle/.test(await page.locator('.jp-StatusBar-Widget').allInnerTexts()
      .then(t => t.join(' '))), 'an idle kernel', 90000);
    log('notebook open, kernel idle');
    // Run > Run All Cells; retry (up to 3 times) when the last cell shows no execution ([*] or [n]) within 20 s
    const prompt = page.locator('.jp-Notebook .jp-Cell .jp-InputPrompt').last();
    for (let attempt = 1; ; attempt++) {
      await page.locator('.lm-MenuBar-itemLabel', { hasText: /^Run$/ }).click();
      await page.locator('.lm-Menu-itemLabel', { hasText: /^Run All Cells$/ }).click();
      const ran = await waitFor(async () => /\[(\*|\d+)\]/.test(await prompt.innerText()), 'cell execution', 20000)
        .then(() => true, () => false);
      log(`Run All Cells (attempt ${attempt}): ${ran}`);
      if (ran) break;
      if (attempt === 3) throw new Error('the notebook cells did not start running after 3 attempts');
      await page.keyboard.press('Escape');
    }
    const handle = page.locator('.widget-slider:has(.widget-label:text-is("guidance A")) .noUi-handle');
    await handle.waitFor({ state: 'visible', timeout: 90000 });
    const before = await waitFor(() => mainImage(page), 'the rendered explorer image', 60000);
    result.before = before;
    result.readout_before = (await page.locator('.widget-slider:has(.widget-label:text-is("guidance A")) .widget-readout').innerText()).trim();
    log('image before', before);
    await page.screenshot({ path: path.join(shotDir, 'explorer_before.png'), fullPage: true });
    await handle.focus();
    await page.keyboard.press('ArrowRight');
    const after = await waitFor(async () => { const m = await mainImage(page); return m && m.sha !== before.sha ? m : null; },
                                'the explorer image to change after the slider move', 60000)
      .catch(async e => { result.error = e.message; return await mainImage(page); });
    await page.waitForTimeout(1000);      // let the last re-render settle, then read the final state
    result.after = await mainImage(page);
    result.readout_after = (await page.locator('.widget-slider:has(.widget-label:text-is("guidance A")) .widget-readout').innerText()).trim();
    result.status = (await page.locator('.jp-OutputArea .widget-label-basic').allInnerTexts()).join(' | ');
    log('image after', after, result.readout_after, result.status);
    result.screenshot = path.join(shotDir, 'explorer_after.png');
    await page.screenshot({ path: result.screenshot, fullPage: true });
  } catch (e) {
    const page = browser.pages()[0];
    if (page) {
      await page.screenshot({ path: path.join(shotDir, 'explorer_failure.png'), fullPage: true }).catch(() => {});
      const outs = await page.locator('.jp-Cell').allInnerTexts().catch(() => []);
      console.error('cells at failure:', JSON.stringify(outs).slice(0, 3000));
      console.error('failure screenshot:', path.join(shotDir, 'explorer_failure.png'));
    }
    throw e;
  } finally {
    await browser.close();
    fs.rmSync(userDir, { recursive: true, force: true });
  }
  console.log('RESULT ' + JSON.stringify(result));
})().catch(e => { console.error('FAILED', e && e.stack || e); process.exit(1); });
