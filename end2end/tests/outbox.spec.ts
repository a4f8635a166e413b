import type { Page } from '@playwright/test';
import {
  connectionStatus,
  enterAs,
  expect,
  messageSeqs,
  messageTexts,
  newUserPage,
  SocketRelay,
  submitMessage,
  test,
  uniqueName,
} from './helpers';

/** Retries back off from ~0.5 s, doubling per failed attempt (see reconnect.spec.ts). */
const RECONNECT_TIMEOUT = 20_000;

/** Messages still waiting for the server's echo. */
function pendingItems(page: Page) {
  return page.getByTestId('messages').locator('li.message.pending');
}

/** `count` texts, unique in the room. */
function texts(label: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => `${label} ${i + 1} of ${count}`);
}

test("a backlog beyond the burst goes out at the server's pace, each message once", async ({ browser }) => {
  test.setTimeout(60_000);
  const room = uniqueName('backlog');
  const page = await newUserPage(browser);
  const relay = await SocketRelay.install(page);
  await enterAs(page, uniqueName('olga'), room);
  // More than the server's burst (40): sent at once, ten would be refused.
  const backlog = texts('Typed offline', 50);

  await test.step('offline, fifty messages wait in the outbox', async () => {
    await relay.drop();
    await expect(connectionStatus(page)).toHaveText(/^Offline/);
    for (const text of backlog) await submitMessage(page, text);
    await expect(pendingItems(page)).toHaveCount(50);
    await expect(pendingItems(page).filter({ hasText: 'sending…' })).toHaveCount(50);
  });

  await test.step('back online, every one is stored once, in order, and none was refused', async () => {
    relay.restore();
    await expect(connectionStatus(page)).toHaveText('Online', { timeout: RECONNECT_TIMEOUT });
    await expect(messageTexts(page)).toHaveText(backlog);
    await expect(pendingItems(page)).toHaveCount(0);
    expect(await messageSeqs(page)).toEqual(backlog.map((_, i) => i + 1));
    expect(SocketRelay.ofType(relay.toPage, 'error'), 'the outbox kept to welcome.limits').toEqual([]);
  });
});

test('sends refused by the rate limit wait for their slot, then are each stored once', async ({ browser }) => {
  test.setTimeout(60_000);
  const room = uniqueName('refused');
  const page = await newUserPage(browser);
  const relay = await SocketRelay.install(page);
  await enterAs(page, uniqueName('rafa'), room);
  const burst = texts('Held back', 60);

  await test.step('the socket stalls while sixty messages go out at the client\'s pace', async () => {
    relay.hold();
    for (const text of burst) await submitMessage(page, text);
    await expect.poll(() => relay.heldCount('send')).toBe(60);
    await expect(pendingItems(page).filter({ hasText: 'sending…' })).toHaveCount(60);
  });

  await test.step('all sixty reach the server at once: the ones over the burst wait to retry', async () => {
    relay.release();
    await expect(pendingItems(page).filter({ hasText: 'waiting to retry' }).first()).toBeVisible();
  });

  await test.step('each is resent in its slot and stored once; none stays pending', async () => {
    await expect(pendingItems(page)).toHaveCount(0);
    await expect(messageTexts(page)).toHaveCount(60);
    // Each once, but not necessarily in order: of frames that reach the server together,
    // a later one may take a token that came free before an earlier refusal's slot (the
    // server's promised slots are not reservations).
    const stored = await messageTexts(page).allTextContents();
    expect([...stored].sort()).toEqual([...burst].sort());
    expect(await messageSeqs(page)).toEqual(burst.map((_, i) => i + 1));
    const errors = SocketRelay.ofType(relay.toPage, 'error');
    expect(errors.length, 'some sends were refused').toBeGreaterThan(0);
    expect(errors.every((e) => e.code === 'rate_limited'), JSON.stringify(errors)).toBe(true);
  });
});
