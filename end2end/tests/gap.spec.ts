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

test('back after a long absence, the gap is filled and a message stored in it is not sent again', async ({
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
  await test.step('back online: the truncated replay and the filled gap make the whole room', async () => {
    relay.restore();
    await expect(connectionStatus(page)).toHaveText('Online', { timeout: 20_000 });
    const all = Array.from({ length: MISSED + 2 }, (_, i) => i + 1);
    await expect.poll(() => messageSeqs(page), { timeout: 20_000 }).toEqual(all);
    expect(SocketRelay.ofType(relay.toPage, 'joined').at(-1)?.truncated, 'the replay was truncated').toBe(true);
    expect(SocketRelay.ofType(relay.fromPage.slice(sentBefore), 'history').length).toBeGreaterThan(0);
  });

  await test.step('her lost message was found in the gap: shown once, not sent again', async () => {
    await expect(everyMessageWithText(page, lost)).toHaveCount(1);
    await expect(pendingWithText(page, lost)).toHaveCount(0);
    expect(SocketRelay.ofType(relay.fromPage.slice(sentBefore), 'send')).toEqual([]);
  });
});
