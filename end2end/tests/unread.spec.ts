import {
  expect,
  expectInRoom,
  joinRoom,
  messageTexts,
  openAs,
  roomLink,
  sendMessage,
  test,
  uniqueName,
} from './helpers';

test('a joined room in the background counts unread messages', async ({ browser }) => {
  const roomA = uniqueName('unread-a');
  const roomB = uniqueName('unread-b');
  const alice = uniqueName('alice');
  const bob = uniqueName('bob');

  const alicePage = await openAs(browser, alice);
  await joinRoom(alicePage, roomA);
  await joinRoom(alicePage, roomB);

  const linkA = roomLink(alicePage, roomA);
  const linkB = roomLink(alicePage, roomB);
  await expect(linkB).toHaveClass(/\bcurrent\b/);
  await expect(linkA).not.toHaveClass(/\bcurrent\b/);
  await expect(linkA.getByTestId('unread')).toHaveCount(0);

  const texts = [`Anyone in ${roomA}?`, 'Ping when you are back'];
  const bobPage = await openAs(browser, bob, roomA);
  for (const text of texts) await sendMessage(bobPage, text);

  await test.step('alice, still in B, sees "2" on A', async () => {
    await expect(linkA.getByTestId('unread')).toHaveText('2');
    await expect(linkB.getByTestId('unread')).toHaveCount(0);
    await expect(alicePage).toHaveURL(new RegExp(`/r/${roomB}$`));
  });

  await test.step('opening A clears the badge and shows the messages', async () => {
    await linkA.click();
    await expectInRoom(alicePage, roomA);
    await expect(linkA).toHaveClass(/\bcurrent\b/);
    await expect(linkA.getByTestId('unread')).toHaveCount(0);
    await expect(messageTexts(alicePage)).toHaveText(texts);
  });
});
