import type { Page, WebSocketRoute } from '@playwright/test';
import {
  connectionStatus,
  enterAs,
  everyMessageWithText,
  expect,
  messageSeqs,
  messageTexts,
  messageWithText,
  newUserPage,
  openAs,
  pendingWithText,
  roomSection,
  sendMessage,
  submitMessage,
  test,
  uniqueName,
} from './helpers';

/**
 * Retries back off from ~0.5 s, doubling per failed attempt (jittered ±20 %): after a few
 * seconds of refused connections the next attempt can be ~5 s away.
 */
const RECONNECT_TIMEOUT = 20_000;

/**
 * A page's WebSocket to /ws, relayed through Playwright so the test can cut it: `drop()`
 * closes the live connection (both sides, like a network failure) and fails every new one
 * until `restore()`.
 */
class FlakyLink {
  private live?: { page: WebSocketRoute; server: WebSocketRoute };
  private refusing = false;

  /** Must run before `page` loads the app. */
  static async install(page: Page): Promise<FlakyLink> {
    const link = new FlakyLink();
    await page.routeWebSocket(/\/ws$/, (ws) => link.accept(ws));
    return link;
  }

  private accept(ws: WebSocketRoute): void {
    if (this.refusing) {
      // Opens with no server behind it and hangs up on the client's first frame (its hello).
      // Not earlier: closed before it opens, the routed socket fires no 'error', and the
      // client's hello, waiting for 'open', would wait forever instead of retrying.
      ws.onMessage(() => void ws.close());
      return;
    }
    // No handlers: frames pass through both ways.
    this.live = { page: ws, server: ws.connectToServer() };
  }

  async drop(): Promise<void> {
    this.refusing = true;
    const live = this.live;
    this.live = undefined;
    if (live) await Promise.all([live.page.close(), live.server.close()]);
  }

  restore(): void {
    this.refusing = false;
  }
}

/** The `data-seq` of the acknowledged message whose text is exactly `text`. */
async function seqOf(page: Page, text: string): Promise<number> {
  return Number(await messageWithText(page, text).getAttribute('data-seq'));
}

test('a dropped connection resumes without loss or duplicates', async ({ browser }) => {
  test.setTimeout(60_000);
  const room = uniqueName('resume');
  const alice = uniqueName('alice');
  const bob = uniqueName('bob');
  const before = `Before the drop, from ${alice}`;
  const missed = [1, 2, 3].map((n) => `Missed ${n} of 3, from ${bob}`);
  const queued = `Typed offline by ${alice}`;
  const after = `Back online, ${alice} here`;

  const alicePage = await newUserPage(browser);
  const link = await FlakyLink.install(alicePage);
  await enterAs(alicePage, alice, room);
  const bobPage = await openAs(browser, bob, room);

  await test.step('alice sends a message and bob receives it', async () => {
    await sendMessage(alicePage, before);
    await expect(messageWithText(bobPage, before)).toBeVisible();
  });

  await test.step('alice loses her connection', async () => {
    await link.drop();
    await expect(connectionStatus(alicePage)).toHaveText(/^Offline/);
    await expect(roomSection(alicePage)).toHaveAttribute('data-live', 'false');
  });

  await test.step('meanwhile bob sends three messages and alice queues one', async () => {
    for (const text of missed) await sendMessage(bobPage, text);
    await submitMessage(alicePage, queued);
    await expect(pendingWithText(alicePage, queued)).toBeVisible();
    await expect(pendingWithText(alicePage, queued)).toContainText('sending…');
    for (const text of missed) await expect(everyMessageWithText(alicePage, text)).toHaveCount(0);
    await expect(everyMessageWithText(bobPage, queued)).toHaveCount(0);
  });

  await test.step('the connection comes back', async () => {
    link.restore();
    await expect(connectionStatus(alicePage)).toHaveText('Online', { timeout: RECONNECT_TIMEOUT });
    await expect(roomSection(alicePage)).toHaveAttribute('data-live', 'true');
  });

  await test.step('alice gets what she missed, once each, in order', async () => {
    for (const text of missed) await expect(everyMessageWithText(alicePage, text)).toHaveCount(1);
    const seqs = await Promise.all([before, ...missed].map((text) => seqOf(alicePage, text)));
    expect(seqs, 'seqs of the first message and the three missed ones').toEqual([1, 2, 3, 4]);
  });

  await test.step('her queued message is delivered once', async () => {
    await expect(pendingWithText(alicePage, queued)).toHaveCount(0);
    await expect(everyMessageWithText(alicePage, queued)).toHaveCount(1);
    await expect(messageWithText(alicePage, queued)).toHaveClass(/\bmine\b/);
    await expect(everyMessageWithText(bobPage, queued)).toHaveCount(1);
  });

  await test.step('both hold the whole room: seq 1..N, no gaps, no duplicates', async () => {
    // A message sent after the resend, on the same connection: the server has handled
    // whatever alice sent before it, so a duplicate would already be stored ahead of it.
    await sendMessage(alicePage, after);
    const all = [before, ...missed, queued, after];
    const seqs = all.map((_, i) => i + 1);
    for (const page of [alicePage, bobPage]) {
      await expect(messageTexts(page)).toHaveText(all);
      await expect.poll(() => messageSeqs(page)).toEqual(seqs);
      await expect(page.getByTestId('messages').locator('li.message.pending')).toHaveCount(0);
    }
  });
});
