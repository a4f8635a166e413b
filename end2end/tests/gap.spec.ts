import {
  connectionStatus,
  enterAs,
  everyMessageWithText,
  expect,
  messageSeqs,
  newUserPage,
  pendingWithText,
  postMessages,
  sendMessage,
  SocketRelay,
  submitMessage,
  test,
  uniqueName,
} from './helpers';

/** More than the server's max_history (500): a resume from before them is truncated. */
const MISSED = 600;

test('back after a long absence, the room reloads from the replay and a message stored in the gap is not sent again', async ({
  browser,
}) => {
  test.setTimeout(90_000);
  const room = uniqueName('gap');
  const alice = uniqueName('alice');
  const first = `First, from ${alice}`;
  const lost = `Stored, but its echo was lost, from ${alice}`;
  const page = await newUserPage(browser);
  const relay = await SocketRelay.install(page);
  await enterAs(page, alice, room);

  await test.step('alice sends one message, then one whose echo never reaches her', async () => {
    await sendMessage(page, first);
    relay.mute();
    await submitMessage(page, lost);
    await expect
      .poll(async () => {
        const page_ = await (await page.request.get(`/api/rooms/${room}/messages`)).json();
        return page_.messages.map((m: { text: string }) => m.text);
      })
      .toEqual([first, lost]);
    await expect(pendingWithText(page, lost)).toBeVisible();
  });

  await test.step(`she goes offline while ${MISSED} messages are posted`, async () => {
    await relay.drop();
    await expect(connectionStatus(page)).toHaveText(/^Offline/);
    await postMessages(browser, room, Array.from({ length: MISSED }, (_, i) => `Missed ${i + 1} of ${MISSED}`));
  });

  const sentBefore = relay.fromPage.length;
  await test.step('back online: the truncated replay replaces the copy, the gap is read for her message', async () => {
    relay.restore();
    await expect(connectionStatus(page)).toHaveText('Online', { timeout: 20_000 });
    expect(SocketRelay.ofType(relay.toPage, 'joined').at(-1)?.truncated, 'the replay was truncated').toBe(true);
    // Messages held from before the gap may have changed in it: the room restarts at the
    // replay (the newest 500 events) instead of patching the gap.
    const replayed = Array.from({ length: 500 }, (_, i) => MISSED + 2 - 499 + i);
    await expect.poll(() => messageSeqs(page), { timeout: 20_000 }).toEqual(replayed);
    await expect
      .poll(() => SocketRelay.ofType(relay.fromPage.slice(sentBefore), 'history').length)
      .toBeGreaterThan(0);
  });

  await test.step('her lost message was found in the gap: not sent again, and shown once when scrolled to', async () => {
    await expect(pendingWithText(page, lost)).toHaveCount(0);
    expect(SocketRelay.ofType(relay.fromPage.slice(sentBefore), 'send')).toEqual([]);
    const list = page.getByTestId('messages');
    await expect
      .poll(
        async () => {
          await list.evaluate((el) => {
            el.scrollTop = 0;
          });
          return everyMessageWithText(page, lost).count();
        },
        { timeout: 30_000 },
      )
      .toBe(1);
    await expect.poll(() => messageSeqs(page)).toEqual(Array.from({ length: MISSED + 2 }, (_, i) => i + 1));
  });
});
