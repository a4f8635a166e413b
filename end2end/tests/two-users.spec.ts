import { composer, expect, member, messageTexts, messageWithText, openAs, sendMessage, test, uniqueName } from './helpers';

test('two people chat live in one room', async ({ browser }) => {
  const room = uniqueName('pair');
  const alice = uniqueName('alice');
  const bob = uniqueName('bob');

  const alicePage = await openAs(browser, alice, room);
  const bobPage = await openAs(browser, bob, room);

  await test.step('both are online', async () => {
    await expect(alicePage.getByTestId('status')).toHaveText('Online');
    await expect(bobPage.getByTestId('status')).toHaveText('Online');
  });

  const hello = `Hi bob, it's ${alice}`;
  await test.step('alice sends a message and bob receives it', async () => {
    const own = await sendMessage(alicePage, hello);
    await expect(own).toHaveClass(/\bmine\b/);

    const received = messageWithText(bobPage, hello);
    await expect(received).toBeVisible();
    await expect(received).not.toHaveClass(/\bmine\b/);
    // First message of a new room: it starts a group, so it names its author.
    await expect(received.locator('.author')).toHaveText(alice);
  });

  const reply = `Hello ${alice}, ${bob} here`;
  await test.step('bob replies and alice receives it', async () => {
    const own = await sendMessage(bobPage, reply);
    await expect(own).toHaveClass(/\bmine\b/);

    const received = messageWithText(alicePage, reply);
    await expect(received).toBeVisible();
    await expect(received).not.toHaveClass(/\bmine\b/);
    await expect(received.locator('.author')).toHaveText(bob);
  });

  await test.step('both see the conversation in the same order', async () => {
    await expect(messageTexts(alicePage)).toHaveText([hello, reply]);
    await expect(messageTexts(bobPage)).toHaveText([hello, reply]);
  });

  await test.step('alice sees that bob is typing', async () => {
    await composer(bobPage).pressSequentially('one more thing', { delay: 20 });
    await expect(alicePage.getByTestId('typing')).toContainText(`${bob} is typing`);
  });

  await test.step('each is in the other one\'s member list', async () => {
    for (const page of [alicePage, bobPage]) {
      await expect(member(page, alice)).toBeVisible();
      await expect(member(page, bob)).toBeVisible();
    }
  });
});
