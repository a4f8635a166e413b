import {
  expect,
  expectInRoom,
  messageSeqs,
  messageTexts,
  openAs,
  sendMessage,
  storedNick,
  test,
  uniqueName,
} from './helpers';

test('messages survive a reload, in order, and the nick is remembered', async ({ browser }) => {
  const room = uniqueName('history');
  const nick = uniqueName('hana');
  const texts = ['First message', 'Second message', 'Third message'].map((t) => `${t} in ${room}`);

  const page = await openAs(browser, nick, room);
  for (const text of texts) await sendMessage(page, text);
  await expect(messageTexts(page)).toHaveText(texts);

  await page.reload();
  await expectInRoom(page, room);

  // Hydrated and online without being asked again.
  await expect(page.locator('#nick-input')).toHaveCount(0);
  expect(await storedNick(page)).toBe(nick);

  // The server-rendered history and the live join agree: same three, same order, no duplicates.
  await expect(messageTexts(page)).toHaveText(texts);
  const seqs = await messageSeqs(page);
  expect(seqs).toHaveLength(3);
  expect(seqs.every((seq, i) => i === 0 || seq > seqs[i - 1]), `data-seq ascending: ${seqs}`).toBe(true);
});
