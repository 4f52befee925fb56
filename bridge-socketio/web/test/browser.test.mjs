// The web app end to end: two people in two headless Chromium contexts, signed in through
// the demo accounts of a real bridge in front of a real daemon. Every wait is for a
// selector or a condition, with a deadline.
//
// Needs chromium (Debian's, at /usr/bin/chromium, or CHROMIUM_PATH) and a build
// (node build.mjs). Without chromium the tests are skipped, except in CI (CI=true), where
// that is a failure.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { next, nowSecs, socket, startBridge, startDaemon } from './harness.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const webRoot = join(root, 'dist/web');
const artifacts = join(root, 'test-artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const missing = existsSync(CHROMIUM) ? null : `chromium is not installed at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`;
/** Longest wait for anything to appear on a page. */
const WAIT = 20_000;
/** Every test: bounded in time, and skipped with the reason when chromium is missing. */
const options = { timeout: 90_000, skip: missing ?? false };

/** A message on a page, by the text of its body (not of a quote of it). */
const message = (page, text) => page.locator('article.msg').filter({ has: page.locator('.body', { hasText: text }) });

/** Types a message into the composer and sends it with Enter. */
async function send(page, text) {
  const box = page.getByLabel('Message', { exact: true });
  await box.fill(text);
  await box.press('Enter');
}

/** Saves a screenshot of `page` in test-artifacts/. */
async function shotOf(page, name) {
  mkdirSync(artifacts, { recursive: true });
  const path = join(artifacts, `${name}.png`);
  await page.screenshot({ path });
  assert.ok(statSync(path).size > 1_000, `${path} was written`);
}

/** Polls `check` (async) until it holds, for at most WAIT. */
async function eventually(check, what) {
  const deadline = Date.now() + WAIT;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Whether the app's cache (IndexedDB) holds `text` for alice. */
const cached = (page, text) =>
  page.evaluate(
    (text) =>
      new Promise((resolve) => {
        const open = indexedDB.open('legalchat');
        open.onerror = () => resolve(false);
        open.onsuccess = () => {
          const get = open.result.transaction('kv').objectStore('kv').get('user:alice');
          get.onsuccess = () => resolve(JSON.stringify(get.result ?? null).includes(text));
          get.onerror = () => resolve(false);
        };
      }),
    text,
  );

/** Resolves once `page`'s banner is empty (online). */
const online = (page) => page.waitForFunction(() => document.querySelector('.banner')?.textContent === '', null, { timeout: WAIT });

/** Runs axe on `page` and fails on anything serious or critical. */
async function axeClean(page, what) {
  const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
  // Through the DevTools protocol: the page's Content-Security-Policy allows no inline script.
  await page.evaluate(axeSource);
  const { violations } = await page.evaluate(() => window.axe.run());
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const report = bad.map((v) => `${v.impact} ${v.id}: ${v.help}\n  ${v.nodes.map((n) => n.target.join(' ')).join('\n  ')}`);
  assert.deepEqual(report, [], `${what}:\n${report.join('\n')}`);
}

/** Starts recording every value the page's progress bars take (they go once their file is sent). */
const recordProgress = (page) =>
  page.evaluate(() => {
    window.progressSeen = [];
    const note = (el) => window.progressSeen.push([el.getAttribute('aria-label'), el.getAttribute('aria-valuenow')]);
    new MutationObserver((records) => {
      for (const r of records) {
        if (r.type === 'attributes') note(r.target);
        for (const n of r.addedNodes) if (n instanceof Element) n.querySelectorAll('[role="progressbar"]').forEach(note);
      }
    }).observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ['aria-valuenow'] });
  });

// In CI a missing browser is a failure, not a skip.
if (missing && process.env.CI === 'true') test('chromium is installed for the browser tests', () => assert.fail(missing));

describe('the web app in Chromium', () => {
  let daemon;
  let bridge;
  let browser;
  let alice;
  let bob;
  const errors = [];

  /** A new browser context signed in through the demo account `label`. */
  async function signIn(label) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT);
    page.on('pageerror', (e) => errors.push(`${label}: ${e.message}`));
    await page.goto(bridge.url);
    await page.getByRole('button', { name: `Sign in as ${label}` }).click();
    await page.getByText(/^Signed in as /).waitFor();
    await online(page);
    return page;
  }

  before(async () => {
    if (missing) return;
    assert.ok(existsSync(join(webRoot, 'index.html')), 'the web app is not built: run node build.mjs');
    daemon = await startDaemon();
    // erin and fred are signed out by an administrator in a test of their own.
    const demo = [
      ['alice', 'advocate'],
      ['bob', 'client'],
      ['erin', 'advocate'],
      ['fred', 'client'],
    ].flatMap(([user, role]) => ['--demo-account', `${user}:${role}:${daemon.token(user, role)}`]);
    bridge = await startBridge(daemon, ['--web-root', webRoot, ...demo]);
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    alice = await signIn('alice (advocate)');
    bob = await signIn('bob (client)');
  });

  after(async () => {
    await browser?.close();
    await bridge?.stop();
    await daemon?.stop();
  });

  test('two people chat: alice starts a conversation with bob and bob reads her message', options, async () => {
    await alice.getByRole('button', { name: 'New conversation' }).click();
    await alice.getByLabel('People (user IDs, separated by commas)').fill('bob');
    await alice.getByRole('button', { name: 'Create' }).click();
    await alice.getByRole('heading', { name: 'bob', exact: true }).waitFor();

    // Bob hears of the conversation and opens it from his list.
    await bob.getByRole('link', { name: /alice/ }).click();
    await bob.getByRole('heading', { name: 'alice', exact: true }).waitFor();

    await send(alice, 'Hello Bob, the **draft** is ready.');
    const received = message(bob, 'Hello Bob, the draft is ready.');
    await received.waitFor();
    // Markdown arrives as markup built from the text, never as HTML.
    assert.equal(await received.locator('.body strong').textContent(), 'draft');
    await message(alice, 'Hello Bob').locator('.status', { hasText: /Sent|Delivered|Read/ }).waitFor();
    assert.deepEqual(errors, []);
  });

  test('message text is untrusted: markup in it stays text', options, async () => {
    const text = '<img src=x onerror="window.pwned=1"> <a href="javascript:alert(1)">click</a> `<b>code</b>`';
    await send(alice, text);
    const shown = message(bob, '<img src=x');
    await shown.waitFor();
    assert.equal(await shown.locator('.body').textContent(), '<img src=x onerror="window.pwned=1"> <a href="javascript:alert(1)">click</a> <b>code</b>');
    assert.equal(await shown.locator('.body img, .body a, .body b').count(), 0);
    assert.equal(await shown.locator('.body code').textContent(), '<b>code</b>');
    assert.equal(await bob.evaluate(() => window.pwned), undefined);
  });

  test('the formatting buttons send Markdown', options, async () => {
    const box = alice.getByLabel('Message', { exact: true });
    await box.fill('Deadline moved');
    await box.press('ControlOrMeta+a');
    await alice.getByRole('button', { name: 'Bold (Ctrl+B)' }).click();
    assert.equal(await box.inputValue(), '**Deadline moved**');
    await box.press('End');
    await box.pressSequentially(' to Friday');
    await box.press('Enter');
    const shown = message(bob, 'Deadline moved to Friday');
    await shown.waitFor();
    assert.equal(await shown.locator('.body strong').textContent(), 'Deadline moved');
  });

  test('typing shows on the other screen and clears by itself', options, async () => {
    const typing = alice.locator('.typing');
    await bob.getByLabel('Message', { exact: true }).pressSequentially('I am writi');
    await typing.getByText('bob is typing…').waitFor();
    // No more keystrokes: the typing signal stops by itself after 3 s.
    const at = Date.now();
    await alice.waitForFunction(() => document.querySelector('.typing')?.textContent === '', null, { timeout: WAIT });
    assert.ok(Date.now() - at >= 1_000, 'typing cleared after the timeout, not at once');
    await bob.getByLabel('Message', { exact: true }).fill('');
  });

  test('a reply, a reaction and a read receipt show on the other screen', options, async () => {
    // Bob replies to Alice's message.
    const original = message(bob, 'Hello Bob');
    await original.getByRole('button', { name: /^Actions for/ }).click();
    await original.getByRole('button', { name: 'Reply' }).click();
    await bob.getByText('Replying to alice').waitFor();
    await send(bob, 'Thanks, reading it now.');

    const reply = message(alice, 'Thanks, reading it now.');
    await reply.locator('.quote', { hasText: 'Hello Bob, the draft is ready.' }).waitFor();

    // Alice reacts to the reply; Bob sees the count.
    await reply.getByRole('button', { name: /^Actions for/ }).click();
    await reply.getByRole('button', { name: 'React', exact: true }).click();
    await reply.getByRole('button', { name: 'React with thumbs up' }).click();
    await message(bob, 'Thanks, reading it now.').locator('.chip', { hasText: '👍 1' }).waitFor();
    await reply.locator('.chip[aria-pressed="true"]', { hasText: '👍 1' }).waitFor();

    // Bob has the conversation open, so he has read Alice's message.
    await message(alice, 'Hello Bob').locator('.status', { hasText: 'Read by bob' }).waitFor();
    assert.deepEqual(errors, []);
  });

  test('edits and deletes of one’s own messages show on the other screen', options, async () => {
    const mine = message(alice, 'Hello Bob');
    await mine.getByRole('button', { name: /^Actions for/ }).click();
    await mine.getByRole('button', { name: 'Edit' }).click();
    const box = alice.getByLabel('Message', { exact: true });
    assert.equal(await box.inputValue(), 'Hello Bob, the **draft** is ready.');
    await box.fill('Hello Bob, the final draft is ready.');
    await box.press('Enter');
    const edited = message(bob, 'Hello Bob, the final draft is ready.');
    await edited.locator('.meta', { hasText: '(edited)' }).waitFor();
    // The quote in Bob's reply follows the edit.
    await message(bob, 'Thanks, reading it now.').locator('.quote', { hasText: 'the final draft' }).waitFor();

    await send(alice, 'Wrong conversation, sorry');
    await message(bob, 'Wrong conversation, sorry').waitFor();
    const wrong = message(alice, 'Wrong conversation, sorry');
    await wrong.getByRole('button', { name: /^Actions for/ }).click();
    alice.once('dialog', (d) => void d.accept());
    await wrong.getByRole('button', { name: 'Delete' }).click();
    await bob.waitForFunction(() => ![...document.querySelectorAll('.body')].some((b) => b.textContent.includes('Wrong conversation')), null, { timeout: WAIT });
    await bob.locator('.body.deleted', { hasText: 'Message deleted' }).waitFor();
    assert.deepEqual(errors, []);
  });

  test('files: an image through the attach button and a PDF by drag-and-drop; progress to 100 %; bob sees the preview, opens the image and downloads the PDF; a refusal in words', options, async () => {
    const icon = join(root, 'public/icon-192.png');
    await recordProgress(alice);

    // The attach button works from the keyboard: Enter on it opens the file input's chooser
    // (counted here, and kept from opening); then the input is given the file.
    const attach = alice.getByRole('button', { name: 'Attach files' });
    const input = alice.locator('.upload-area input[type="file"]');
    await input.evaluate((el) => {
      window.choosers = 0;
      el.addEventListener('click', (e) => {
        window.choosers += 1;
        e.preventDefault();
      });
    });
    await attach.focus();
    await alice.keyboard.press('Enter');
    await alice.waitForFunction(() => window.choosers === 1, null, { timeout: WAIT });
    assert.equal(await input.evaluate((el) => el.multiple), true);
    await input.setInputFiles(icon);

    // Bob sees the server-made preview in the message.
    const preview = bob.getByRole('button', { name: /^Open image icon-192\.png \(PNG image, 2\.\d KiB\)$/ });
    await preview.waitFor();
    assert.match(await preview.locator('img').getAttribute('src'), /^data:image\/jpeg;base64,/);
    assert.equal(await bob.locator('article.msg').filter({ has: preview }).locator('.body').count(), 0, 'a message of a file alone has no text line');
    await alice.getByRole('button', { name: /^Open image icon-192\.png/ }).waitFor();
    await alice.locator('.uploads li').first().waitFor({ state: 'detached' });
    const bars = await alice.evaluate(() => window.progressSeen);
    const mine = bars.filter(([label]) => label === 'Uploading icon-192.png').map(([, now]) => now);
    assert.equal(mine.at(-1), '100', `the progress bar went to 100 (it took ${JSON.stringify(mine)})`);

    // Clicking the preview opens the full image (a one-time inline URL) in a dialog.
    await preview.click();
    const viewer = bob.getByRole('dialog', { name: 'icon-192.png' });
    await viewer.waitFor();
    await bob.waitForFunction(() => document.querySelector('dialog.viewer img')?.naturalWidth === 192, null, { timeout: WAIT });
    assert.match(await viewer.locator('img').getAttribute('src'), /\/api\/downloads\/[\w-]+\?inline$/);
    await axeClean(bob, 'chat view with the image viewer open');
    mkdirSync(artifacts, { recursive: true });
    await bob.screenshot({ path: join(artifacts, 'image-viewer.png') });
    await bob.keyboard.press('Escape');
    await viewer.waitFor({ state: 'hidden' });
    assert.equal(await preview.evaluate((el) => el === document.activeElement), true, 'focus returns to the preview');

    // A PDF dropped onto the conversation (a synthetic drop of a File, as a browser makes it).
    const pdf = Buffer.concat([Buffer.from('%PDF-1.7\n'), Buffer.from('x'.repeat(3_000))]);
    const pane = alice.locator('.chat-pane');
    const drag = await alice.evaluateHandle((bytes) => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(bytes)], 'Brief.pdf', { type: 'application/pdf' }));
      return dt;
    }, [...pdf]);
    await pane.dispatchEvent('dragenter', { dataTransfer: drag });
    await pane.dispatchEvent('dragover', { dataTransfer: drag });
    assert.equal(await pane.evaluate((el) => el.classList.contains('dropping')), true, 'the pane shows where to drop');
    await pane.dispatchEvent('drop', { dataTransfer: drag });
    assert.equal(await pane.evaluate((el) => el.classList.contains('dropping')), false);

    // Bob gets a chip with the name, type and size, which downloads the file.
    const chip = bob.getByRole('button', { name: 'Download Brief.pdf, PDF · 2.9 KiB' });
    await chip.waitFor();
    const [download] = await Promise.all([bob.waitForEvent('download'), chip.click()]);
    assert.equal(download.suggestedFilename(), 'Brief.pdf');
    assert.ok(readFileSync(await download.path()).equals(pdf), 'the downloaded file is the one dropped');
    await alice.getByRole('button', { name: 'Download Brief.pdf, PDF · 2.9 KiB' }).waitFor();
    const pdfBars = (await alice.evaluate(() => window.progressSeen)).filter(([label]) => label === 'Uploading Brief.pdf');
    assert.equal(pdfBars.at(-1)?.[1], '100');
    // The list says what came.
    await bob.locator('.conv[aria-current="page"] .conv-preview', { hasText: 'alice: 📎 Brief.pdf' }).waitFor();

    // An executable named .pdf: refused, and the row says why until it is dismissed.
    await input.setInputFiles({ name: 'invoice.pdf', mimeType: 'application/pdf', buffer: Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]), Buffer.alloc(2_000)]) });
    const refusal = alice.getByRole('alert').filter({ hasText: 'invoice.pdf cannot be attached' });
    await refusal.waitFor();
    assert.match(await refusal.textContent(), /^invoice\.pdf cannot be attached: its content is application\/x-executable, and only a PDF, an Office document, an image \(PNG, JPEG, GIF, WebP\) or plain text can be attached\.$/);
    await axeClean(alice, 'chat view with files and a refused upload');
    await shotOf(alice, 'attachments-desktop');
    await alice.locator('.upload.failed').getByRole('button', { name: 'Dismiss' }).click();
    await refusal.waitFor({ state: 'detached' });
    await shotOf(bob, 'attachments-received');
    assert.deepEqual(errors, []);
  });

  test('offline: a banner, a reload from the cache, queued sends delivered once, nothing missed', options, async () => {
    const conversationId = decodeURIComponent(new URL(alice.url()).hash.replace(/^#c=/, ''));
    assert.match(conversationId, /^[0-9a-f]{32}$/);
    // The app shell is cached by the service worker once it controls the page.
    await alice.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: WAIT });

    await bridge.stop();
    const banner = alice.locator('.banner');
    await banner.getByText('Offline — messages will be sent when the connection returns').waitFor();
    await send(alice, 'Queued while offline');
    await message(alice, 'Queued while offline').locator('.status', { hasText: 'Sending…' }).waitFor();

    // A reload without the bridge: the shell, the history and the queued send come from the cache.
    await eventually(() => cached(alice, 'Queued while offline'), 'the queued message in the cache');
    await alice.reload();
    await banner.getByText('Offline').waitFor();
    await message(alice, 'Hello Bob, the final draft is ready.').waitFor();
    await message(alice, 'Queued while offline').locator('.status', { hasText: 'Sending…' }).waitFor();

    // Meanwhile Bob writes from another device, through another bridge.
    const { ChatClient } = await import('../dist/client/index.js');
    const other = await startBridge(daemon);
    const phone = new ChatClient(other.url);
    try {
      await phone.connect(daemon.token('bob', 'client'));
      await phone.sendMessage(conversationId, 'Sent while Alice was offline');
    } finally {
      phone.disconnect();
      await other.stop();
    }

    await bridge.start();
    await online(alice);
    await online(bob);
    await message(bob, 'Queued while offline').waitFor();
    await message(alice, 'Sent while Alice was offline').waitFor();
    await message(alice, 'Queued while offline').locator('.status', { hasText: /Sent|Delivered|Read/ }).waitFor();
    await send(bob, 'Back online');
    await message(alice, 'Back online').waitFor();

    for (const [name, page] of [['alice', alice], ['bob', bob]]) {
      for (const text of ['Queued while offline', 'Sent while Alice was offline', 'Back online', 'Thanks, reading it now.']) {
        assert.equal(await message(page, text).count(), 1, `${name} sees “${text}” once`);
      }
    }
    assert.deepEqual(errors, []);
  });

  test('accessibility: axe finds nothing serious or critical on the sign-in page and the chat', options, async () => {
    const scan = axeClean;

    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      page.setDefaultTimeout(WAIT);
      await page.goto(bridge.url);
      await page.getByRole('button', { name: 'Sign in as alice (advocate)' }).waitFor();
      await scan(page, 'sign-in page with demo accounts');
      // Without demo accounts (production), the page asks for a token.
      await page.route('**/api/dev/accounts', (r) => r.fulfill({ status: 404, body: 'not found' }));
      await page.reload();
      await page.getByLabel('Paste your access token').waitFor();
      await scan(page, 'sign-in page with the token field');
    } finally {
      await context.close();
    }

    await scan(alice, 'chat view');
    const reply = message(alice, 'Thanks, reading it now.');
    await reply.getByRole('button', { name: /^Actions for/ }).click();
    await reply.getByRole('button', { name: 'React', exact: true }).click();
    await scan(alice, 'chat view with a message menu and the reaction picker open');
    await alice.keyboard.press('Escape');
  });

  test('screenshots at phone and desktop sizes; one pane at a time on a phone', options, async () => {
    mkdirSync(artifacts, { recursive: true });
    // Touch targets: every visible button and link is at least 44 px high.
    const smallTargets = () =>
      alice.evaluate(() =>
        [...document.querySelectorAll('button, a')]
          .filter((el) => el.offsetParent !== null && el.getBoundingClientRect().height < 44)
          .map((el) => el.getAttribute('aria-label') ?? el.textContent),
      );
    const shot = async (name) => {
      const path = join(artifacts, `${name}.png`);
      await alice.screenshot({ path });
      assert.ok(statSync(path).size > 1_000, `${path} was written`);
    };
    await alice.setViewportSize({ width: 1280, height: 800 });
    assert.ok(await alice.locator('.list-pane').isVisible(), 'desktop: the list beside the chat');
    assert.ok(await alice.locator('.chat-pane').isVisible());
    await shot('chat-desktop');

    await alice.setViewportSize({ width: 390, height: 844 });
    await alice.locator('.list-pane').waitFor({ state: 'hidden' });
    await shot('chat-phone');
    assert.deepEqual(await smallTargets(), [], 'the chat');
    // The back button leads to the list, which then fills the screen.
    await alice.getByRole('link', { name: 'Back to conversations' }).click();
    await alice.locator('.chat-pane').waitFor({ state: 'hidden' });
    await alice.locator('.list-pane').waitFor();
    await shot('list-phone');
    assert.deepEqual(await smallTargets(), [], 'the list');
    await alice.setViewportSize({ width: 1280, height: 800 });
    assert.deepEqual(errors, []);
  });

  test('history: the newest page first, older pages on scrolling up; sign-out forgets this device’s copy', options, async () => {
    const { ChatClient } = await import('../dist/client/index.js');
    const writer = new ChatClient(bridge.url);
    const total = 120;
    try {
      await writer.connect(daemon.token('carol', 'advocate'));
      const c = await writer.createConversation({ type: 'group', participants: ['alice'], title: 'Discovery archive' });
      for (let i = 1; i <= total; i++) await writer.sendMessage(c._id, `Exhibit ${i}`);
    } finally {
      writer.disconnect();
    }

    // A new device: nothing cached, so the history comes page by page.
    const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
    try {
      const page = await context.newPage();
      page.setDefaultTimeout(WAIT);
      page.on('pageerror', (e) => errors.push(`alice on a phone: ${e.message}`));
      await page.goto(bridge.url);
      await page.getByRole('button', { name: 'Sign in as alice (advocate)' }).click();
      await page.getByRole('link', { name: /Discovery archive/ }).click();
      await message(page, `Exhibit ${total}`).waitFor();
      assert.equal(await message(page, /^Exhibit 1$/).count(), 0, 'only the newest page at first');
      await page.getByRole('button', { name: 'Load older messages' }).waitFor();

      await eventually(async () => {
        await page.locator('.scroller').evaluate((el) => (el.scrollTop = 0));
        return (await message(page, /^Exhibit 1$/).count()) === 1;
      }, 'the first message after scrolling up');
      const texts = await page.locator('article.msg .body').allTextContents();
      assert.deepEqual(texts, Array.from({ length: total }, (_, i) => `Exhibit ${i + 1}`), 'every message once, in order');
      await page.getByRole('button', { name: 'Load older messages' }).waitFor({ state: 'hidden' });

      await page.getByRole('button', { name: 'Sign out' }).click();
      await page.getByRole('button', { name: 'Sign in as alice (advocate)' }).waitFor();
      assert.equal(await page.evaluate(() => sessionStorage.length), 0);
      await eventually(async () => !(await cached(page, 'Exhibit')), 'the cache to be forgotten');
    } finally {
      await context.close();
    }
    assert.deepEqual(errors, []);
  });

  test('signed out by an administrator: the app says why and is back at the sign-in page, without reconnecting', options, async () => {
    const { ChatClient } = await import('../dist/client/index.js');
    const admin = new ChatClient(bridge.url, { transports: ['websocket'] });
    const context = await browser.newContext();
    try {
      await admin.connect(daemon.token('root', 'admin'));
      const page = await context.newPage();
      page.setDefaultTimeout(WAIT);
      page.on('pageerror', (e) => errors.push(`erin: ${e.message}`));
      // Socket.IO handshakes (a polling request without a sid, or a WebSocket without one).
      // Each one's time and URL, so that a failure says which handshake came when.
      const handshakeLog = [];
      let handshakes = 0;
      page.on('request', (r) => {
        const url = new URL(r.url());
        if (url.pathname.startsWith('/socket.io/') && !url.searchParams.has('sid')) {
          handshakes += 1;
          handshakeLog.push(`${new Date().toISOString()} ${r.method()} ${url.pathname}${url.search}`);
        }
      });
      await page.goto(bridge.url);
      await page.getByRole('button', { name: 'Sign in as erin (advocate)' }).click();
      await page.getByText(/^Signed in as erin/).waitFor();
      await online(page);

      // Revoked: the sign-in page says so. The demo token the app would retry with is the
      // revoked one, so it does not reconnect with it.
      const before = handshakes;
      const revokedAt = new Date().toISOString();
      await admin.revokeSessions('erin');
      await page.getByRole('alert').filter({ hasText: 'An administrator signed you out. Sign in again to continue.' }).waitFor();
      await page.getByRole('button', { name: 'Sign in as erin (advocate)' }).waitFor();
      assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'the session is forgotten');
      assert.equal(handshakes, before, `no reconnection with the refused token (revoked at ${revokedAt}; handshakes: ${handshakeLog.join('; ')})`);
      await shotOf(page, 'signed-out-revoked');
      // Signing in again with that token: refused, in words.
      await page.getByRole('button', { name: 'Sign in as erin (advocate)' }).click();
      await page.getByRole('alert').filter({ hasText: 'That sign-in was revoked by an administrator. Sign in again with a new one.' }).waitFor();
      await page.getByRole('button', { name: 'Sign in as erin (advocate)' }).waitFor();

      // Deactivated: signed out, and told to ask an administrator.
      await page.getByRole('button', { name: 'Sign in as fred (client)' }).click();
      await page.getByText(/^Signed in as fred/).waitFor();
      await online(page);
      await admin.setUserActive('fred', false);
      await page.getByRole('alert').filter({ hasText: 'Your account has been deactivated. Ask an administrator to reactivate it.' }).waitFor();
      await page.getByRole('button', { name: 'Sign in as fred (client)' }).waitFor();
      await axeClean(page, 'sign-in page after a sign-out by the server');
      await admin.setUserActive('fred', true);
    } finally {
      admin.disconnect();
      await context.close();
    }
    assert.deepEqual(errors, []);
  });

  test('a tab left open renews its session from the demo accounts before the token expires', options, async () => {
    // A bridge whose demo account's token expires in a few seconds; later lists of the
    // accounts (the app's token provider) give fresh tokens, as a sign-in service would.
    const exp = nowSecs() + 8;
    const short = daemon.token('gina', 'advocate', 0, { exp });
    const other = await startBridge(daemon, ['--web-root', webRoot, '--demo-account', `gina:advocate:${short}`]);
    const { ChatClient } = await import('../dist/client/index.js');
    const alicePhone = new ChatClient(other.url, { transports: ['websocket'] });
    const context = await browser.newContext();
    let clock;
    try {
      await alicePhone.connect(daemon.token('alice', 'advocate'));
      const conv = await alicePhone.createConversation({ type: 'group', participants: ['gina'], title: 'Renewal in the browser' });
      const page = await context.newPage();
      page.setDefaultTimeout(WAIT);
      page.on('pageerror', (e) => errors.push(`gina: ${e.message}`));
      let lists = 0;
      const fresh = [];
      await page.route('**/api/dev/accounts', (route) => {
        lists += 1;
        if (lists === 1) return route.continue(); // the sign-in page: the short token
        const token = daemon.token('gina', 'advocate', 60);
        fresh.push(token);
        return route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify({ accounts: [{ userId: 'gina', role: 'advocate', token }] }) });
      });
      await page.goto(other.url);
      await page.getByRole('button', { name: 'Sign in as gina (advocate)' }).click();
      await page.getByText(/^Signed in as gina/).waitFor();
      await online(page);

      // The clock: a socket with the same short token, which nothing renews.
      clock = socket(other.url, { token: short });
      await next(clock, 'authenticated');
      const expired = next(clock, 'unauthorized');
      // The app renews: the tab keeps the fresh token for a reload.
      await eventually(async () => fresh.length > 0 && (await page.evaluate(() => sessionStorage.getItem('legalchat.session') ?? '')).includes(fresh[0]), 'the renewed token in the session');
      assert.match((await expired).message, /your token expired/);

      // Past the first token's expiry: still signed in, and messages go both ways.
      await page.getByRole('link', { name: /Renewal in the browser/ }).click();
      await send(page, 'Still signed in after the first token expired');
      await message(page, 'Still signed in after the first token expired').locator('.status', { hasText: /Sent|Delivered|Read/ }).waitFor();
      await alicePhone.sendMessage(conv._id, 'Alice can still reach Gina');
      await message(page, 'Alice can still reach Gina').waitFor();
      assert.equal(await page.locator('.banner').textContent(), '');
      assert.equal(await page.getByRole('button', { name: /^Sign in as/ }).count(), 0);
      assert.ok(Date.now() > exp * 1000, 'checked after the first token expired');
    } finally {
      clock?.close();
      alicePhone.disconnect();
      await context.close();
      await other.stop();
    }
    assert.deepEqual(errors, []);
  });
});
