/**
 * Conversations (PROTOCOL.md §13): edits, deletions, reactions, replies, mentions and
 * their notifications, read state across tabs, search, and Markdown.
 *
 * Signed-in accounts throughout: mentions name usernames, and read state is kept for
 * accounts only.
 */
import type { Browser, Page } from '@playwright/test';
import {
  clickMessageAction,
  composer,
  emojiPicker,
  enterAs,
  expect,
  expectInRoom,
  expectOnline,
  expectSignedInChat,
  joinRoom,
  member,
  messageAction,
  messageBySeq,
  messageItems,
  messageWithText,
  openAs,
  openAsUser,
  PASSWORD,
  postMessages,
  reactionButton,
  reactTo,
  replyQuote,
  roomLink,
  searchMessages,
  sendMessage,
  seqOf,
  signUp,
  submitMessage,
  test,
  uniqueName,
  uniqueSuffix,
} from './helpers';

declare global {
  interface Window {
    /** The notifications the page made (by the recorder standing in for `Notification`). */
    __notes?: { title: string; body: string }[];
    /** How often the page asked for permission to notify. */
    __permissionAsks?: number;
    /** What `document.hidden` answers (the recorder's stand-in for a hidden tab). */
    __hidden?: boolean;
  }
}

/**
 * Init script: `Notification` becomes a recorder (permission as given, asking grants it)
 * and `document.hidden` answers `window.__hidden`, so a test can hide the tab.
 */
function fakeNotifications(permission: string): void {
  window.__notes = [];
  window.__permissionAsks = 0;
  // A plain constructor function: no class-field helpers in the serialised script.
  function RecordingNotification(title: string, options?: { body?: string }): void {
    window.__notes?.push({ title, body: options?.body ?? '' });
  }
  const recorder = RecordingNotification as unknown as { permission: string; requestPermission: () => Promise<string> };
  recorder.permission = permission;
  recorder.requestPermission = () => {
    window.__permissionAsks = (window.__permissionAsks ?? 0) + 1;
    recorder.permission = 'granted';
    return Promise.resolve('granted');
  };
  Object.defineProperty(window, 'Notification', { value: RecordingNotification, configurable: true, writable: true });
  Object.defineProperty(Document.prototype, 'hidden', { get: () => !!window.__hidden, configurable: true });
}

/** A fresh browser with recorded notifications, signed up as `username`, online in `room`. */
async function openAsUserWithNotifications(browser: Browser, username: string, room: string): Promise<Page> {
  const context = await browser.newContext();
  await context.addInitScript(fakeNotifications, 'granted');
  const page = await context.newPage();
  await signUp(page, username, PASSWORD, { next: `/r/${room}` });
  await expectSignedInChat(page, username);
  await expectInRoom(page, room);
  return page;
}

const notes = (page: Page) => page.evaluate(() => window.__notes ?? []);
const setHidden = (page: Page, hidden: boolean) => page.evaluate((h) => void (window.__hidden = h), hidden);

/** Records every alert/confirm/prompt a page opens (dismissing it so the page goes on). */
function watchDialogs(page: Page, seen: string[]): void {
  page.on('dialog', async (dialog) => {
    seen.push(`${dialog.type()}: ${dialog.message()}`);
    await dialog.dismiss();
  });
}

test('an edit shows the new text, marked "(edited)", to everyone', async ({ browser }) => {
  const room = uniqueName('edit');
  const ann = uniqueName('ann');
  const bob = uniqueName('bob');
  const annPage = await openAsUser(browser, ann, room);
  const bobPage = await openAsUser(browser, bob, room);
  const before = `We ship on Friday, says ${ann}`;
  const after = `We ship on Monday, says ${ann}`;

  const own = await sendMessage(annPage, before);
  const seq = await seqOf(own);
  await expect(messageWithText(bobPage, before)).toBeVisible();

  await test.step('only the author is offered "Edit"', async () => {
    await expect(messageAction(own, 'Edit')).toHaveCount(1);
    await expect(messageAction(messageBySeq(bobPage, seq), 'Edit')).toHaveCount(0);
    await expect(messageAction(messageBySeq(bobPage, seq), 'Reply')).toHaveCount(1);
  });

  const mine = messageBySeq(annPage, seq);
  const box = composer(annPage);
  const editing = annPage.getByTestId('editing');

  await test.step('"Edit" puts the text in the composer; Escape leaves the message as it was', async () => {
    await expect(editing).toBeHidden();
    await clickMessageAction(mine, 'Edit');
    await expect(editing).toBeVisible();
    await expect(editing).toContainText('Editing your message');
    await expect(box).toHaveValue(before);
    await expect(box).toBeFocused();
    await box.fill('not this');
    await box.press('Escape');
    await expect(editing).toBeHidden();
    await expect(box).toHaveValue('');
    await expect(mine.locator('.text')).toHaveText(before);
    await expect(mine.locator('.edited')).toHaveCount(0);
  });

  await test.step('Enter saves: both see the new text and "(edited)"', async () => {
    await clickMessageAction(mine, 'Edit');
    await expect(box).toHaveValue(before);
    await box.fill(after);
    await box.press('Enter');
    await expect(editing).toBeHidden();
    await expect(box).toHaveValue('');
    for (const page of [annPage, bobPage]) {
      const message = messageBySeq(page, seq);
      await expect(message.locator('.text')).toHaveText(`${after} (edited)`);
      await expect(message.locator('.edited')).toHaveText('(edited)');
      await expect(messageWithText(page, before)).toHaveCount(0);
    }
    // An edit changes the message in place: nothing new was sent.
    await expect(messageItems(bobPage)).toHaveCount(1);
  });

  await test.step('"Save" saves too, and "Cancel edit" cancels', async () => {
    const third = `${after}, or Tuesday`;
    await clickMessageAction(mine, 'Edit');
    await box.fill(third);
    await annPage.locator('form.composer').getByRole('button', { name: 'Save' }).click();
    await expect(messageBySeq(bobPage, seq).locator('.text')).toHaveText(`${third} (edited)`);

    await clickMessageAction(mine, 'Edit');
    await expect(box).toHaveValue(third);
    await editing.getByRole('button', { name: 'Cancel edit' }).click();
    await expect(editing).toBeHidden();
    await expect(box).toHaveValue('');
    await expect(annPage.locator('form.composer').getByRole('button', { name: 'Send' })).toBeVisible();
  });

  await test.step('after a reload the message is still the edited one', async () => {
    await bobPage.reload();
    await expectInRoom(bobPage, room);
    await expect(messageBySeq(bobPage, seq).locator('.text')).toHaveText(`${after}, or Tuesday (edited)`);
  });
});

test('a deleted message becomes a tombstone for everyone', async ({ browser }) => {
  const room = uniqueName('delete');
  const ann = uniqueName('ann');
  const bob = uniqueName('bob');
  const annPage = await openAsUser(browser, ann, room);
  const bobPage = await openAsUser(browser, bob, room);
  const oops = `Wrong room, sorry ${uniqueSuffix()}`;
  const stays = `This one stays ${uniqueSuffix()}`;

  await sendMessage(annPage, stays);
  const own = await sendMessage(annPage, oops);
  const seq = await seqOf(own);
  await expect(messageWithText(bobPage, oops)).toBeVisible();

  await test.step('dismissing the confirmation keeps the message', async () => {
    const asked = annPage.waitForEvent('dialog').then(async (dialog) => {
      const question = `${dialog.type()}: ${dialog.message()}`;
      await dialog.dismiss();
      return question;
    });
    await clickMessageAction(own, 'Delete');
    expect(await asked).toBe('confirm: Delete this message for everyone?');
    await expect(messageWithText(annPage, oops)).toBeVisible();
    await expect(messageWithText(bobPage, oops)).toBeVisible();
  });

  await test.step('accepting it: both see "message deleted" in its place', async () => {
    annPage.once('dialog', (dialog) => void dialog.accept());
    await clickMessageAction(own, 'Delete');
    for (const page of [annPage, bobPage]) {
      const message = messageBySeq(page, seq);
      await expect(message).toHaveClass(/\bdeleted\b/);
      await expect(message.locator('.tombstone')).toHaveText('message deleted');
      await expect(messageWithText(page, oops)).toHaveCount(0);
      // A tombstone has nothing left to do.
      await expect(message.locator('div.actions')).toHaveCount(0);
      await expect(messageWithText(page, stays)).toBeVisible();
    }
  });

  await test.step('after a reload the text is not served again', async () => {
    const response = await bobPage.reload();
    expect(await response?.text()).not.toContain(oops);
    await expectInRoom(bobPage, room);
    await expect(messageBySeq(bobPage, seq).locator('.tombstone')).toHaveText('message deleted');
    await expect(messageWithText(bobPage, stays)).toBeVisible();
  });
});

test('reactions show their count and who reacted, and toggle', async ({ browser }) => {
  const room = uniqueName('react');
  const ann = uniqueName('ann');
  const bob = uniqueName('bob');
  const annPage = await openAsUser(browser, ann, room);
  const bobPage = await openAsUser(browser, bob, room);
  const lunch = `Lunch at noon? ${uniqueSuffix()}`;

  const own = await sendMessage(annPage, lunch);
  const seq = await seqOf(own);
  const onAnn = messageBySeq(annPage, seq);
  const onBob = messageBySeq(bobPage, seq);

  await test.step('the picker filters by name; Enter picks the first match', async () => {
    await clickMessageAction(onBob, 'React');
    const picker = emojiPicker(bobPage);
    await expect(picker).toBeVisible();
    await expect(picker.getByLabel('Search emoji')).toBeFocused();
    await picker.getByLabel('Search emoji').fill('party');
    await expect(picker.getByRole('button', { name: /^React with / })).toHaveCount(2);
    await expect(picker.getByRole('button', { name: 'React with 🎉' })).toBeVisible();
    await expect(picker.getByRole('button', { name: 'React with 🥳' })).toBeVisible();
    await picker.getByLabel('Search emoji').press('Enter');
    await expect(picker).toBeHidden();
  });

  await test.step('both see "🎉 1"; it is pressed for bob only, and names him', async () => {
    await expect(reactionButton(onBob, '🎉')).toHaveText('🎉 1');
    await expect(reactionButton(onBob, '🎉')).toHaveAttribute('aria-pressed', 'true');
    const seen = reactionButton(onAnn, '🎉');
    await expect(seen).toHaveText('🎉 1');
    await expect(seen).toHaveAttribute('aria-pressed', 'false');
    await expect(seen).toHaveAttribute('title', bob);
    await expect(seen).toHaveAccessibleName(`🎉 1: ${bob}`);
    await expect(onAnn.getByRole('group', { name: 'Reactions' })).toBeVisible();
  });

  await test.step('ann joins in by clicking it: "🎉 2", both names, in order', async () => {
    await reactionButton(onAnn, '🎉').click();
    await expect(reactionButton(onAnn, '🎉')).toHaveText('🎉 2');
    await expect(reactionButton(onAnn, '🎉')).toHaveAttribute('aria-pressed', 'true');
    await expect(reactionButton(onBob, '🎉')).toHaveText('🎉 2');
    await expect(reactionButton(onBob, '🎉')).toHaveAttribute('title', `${bob}, ${ann}`);
  });

  await test.step('a second emoji, clicked in the picker, goes last', async () => {
    await clickMessageAction(onAnn, 'React');
    await emojiPicker(annPage).getByRole('button', { name: 'React with 👍' }).click();
    await expect(emojiPicker(annPage)).toBeHidden();
    await expect(onBob.locator('button.reaction')).toHaveText(['🎉 2', '👍 1']);
    await expect(reactionButton(onBob, '👍')).toHaveAttribute('title', ann);
  });

  await test.step('clicking again takes one\'s reaction back', async () => {
    await reactionButton(onBob, '🎉').click();
    await expect(reactionButton(onAnn, '🎉')).toHaveText('🎉 1');
    await expect(reactionButton(onAnn, '🎉')).toHaveAttribute('title', ann);
    await expect(reactionButton(onBob, '🎉')).toHaveAttribute('aria-pressed', 'false');

    await reactionButton(onAnn, '🎉').click();
    await reactionButton(onAnn, '👍').click();
    for (const message of [onAnn, onBob]) {
      await expect(message.locator('button.reaction')).toHaveCount(0);
      await expect(message.locator('div.reactions')).toHaveCount(0);
    }
  });

  await test.step('a reload shows the reactions as they are now', async () => {
    await reactTo(bobPage, onBob, 'rocket');
    await expect(reactionButton(onAnn, '🚀')).toHaveText('🚀 1');
    await annPage.reload();
    await expectInRoom(annPage, room);
    await expect(messageBySeq(annPage, seq).locator('button.reaction')).toHaveText(['🚀 1']);
    await expect(reactionButton(messageBySeq(annPage, seq), '🚀')).toHaveAttribute('title', bob);
  });
});

test('a reply quotes its original, and the quote leads back to it, even when it is not loaded', async ({
  browser,
}) => {
  test.setTimeout(60_000);
  const room = uniqueName('reply');
  const ann = uniqueName('ann');
  const bob = uniqueName('bob');
  const annPage = await openAsUser(browser, ann, room);
  const bobPage = await openAsUser(browser, bob, room);
  const question = `Where do we deploy from? ${uniqueSuffix()}`;
  const answer = `From the main branch, ${ann}`;

  const original = await sendMessage(annPage, question);
  const originalSeq = await seqOf(original);
  await expect(messageWithText(bobPage, question)).toBeVisible();
  // More than a page (50) after it: a fresh load does not hold the original.
  const filler = Array.from({ length: 70 }, (_, i) => `Filler ${i + 1} in ${room}`);
  await postMessages(browser, room, filler);
  for (const page of [annPage, bobPage]) await expect(messageWithText(page, filler[69])).toBeVisible();
  await expect(messageWithText(bobPage, filler[0])).toBeVisible();

  const replying = bobPage.getByTestId('replying');
  await test.step('"Reply" shows whom the composer answers; "Cancel reply" forgets it', async () => {
    await clickMessageAction(messageBySeq(bobPage, originalSeq), 'Reply');
    await expect(replying).toContainText(`Replying to ${ann}`);
    await expect(composer(bobPage)).toBeFocused();
    await replying.getByRole('button', { name: 'Cancel reply' }).click();
    await expect(replying).toHaveCount(0);
  });

  let replySeq = 0;
  await test.step('the sent reply quotes the original\'s author and first line, for both', async () => {
    await clickMessageAction(messageBySeq(bobPage, originalSeq), 'Reply');
    await expect(replying).toContainText(`Replying to ${ann}`);
    const reply = await sendMessage(bobPage, answer);
    await expect(replying).toHaveCount(0);
    replySeq = await seqOf(reply);
    await expect(replyQuote(reply)).toHaveAccessibleName(`Reply to ${ann} ${question}`);
    await expect(replyQuote(messageWithText(annPage, answer))).toHaveAccessibleName(`Reply to ${ann} ${question}`);
  });

  await test.step('clicking the quote brings the original into view', async () => {
    await replyQuote(messageBySeq(bobPage, replySeq)).click();
    const shown = messageBySeq(bobPage, originalSeq);
    await expect(shown).toHaveClass(/\bsought\b/);
    await expect(shown).toBeInViewport();
  });

  await test.step('in a fresh load the original is older than the first page: the server quotes it, and the quote loads it', async () => {
    await annPage.reload();
    await expectInRoom(annPage, room);
    const reply = messageBySeq(annPage, replySeq);
    await expect(reply).toBeVisible();
    await expect(messageBySeq(annPage, originalSeq)).toHaveCount(0);
    await expect(replyQuote(reply)).toHaveAccessibleName(`Reply to ${ann} ${question}`);
    await replyQuote(reply).click();
    const shown = messageBySeq(annPage, originalSeq);
    await expect(shown).toHaveClass(/\bsought\b/);
    await expect(shown.locator('.text')).toHaveText(question);
    await expect(shown).toBeInViewport();
  });

  await test.step('the quote follows an edit of the original, and its deletion', async () => {
    const edited = `Deploys go from the release branch now, ${ann}`;
    await clickMessageAction(messageBySeq(annPage, originalSeq), 'Edit');
    await composer(annPage).fill(edited);
    await composer(annPage).press('Enter');
    for (const page of [annPage, bobPage]) {
      await expect(replyQuote(messageBySeq(page, replySeq))).toHaveAccessibleName(`Reply to ${ann} ${edited}`);
    }
    annPage.once('dialog', (d) => d.accept());
    await clickMessageAction(messageBySeq(annPage, originalSeq), 'Delete');
    for (const page of [annPage, bobPage]) {
      await expect(replyQuote(messageBySeq(page, replySeq))).toHaveAccessibleName(`Reply to ${ann} message deleted`);
    }
  });
});

test('a mention completes with Tab and notifies a hidden tab, as its room\'s setting says', async ({ browser }) => {
  const room = uniqueName('mention');
  const ann = uniqueName('ann');
  const bob = uniqueName('bob');
  const annPage = await openAsUser(browser, ann, room);
  const bobPage = await openAsUserWithNotifications(browser, bob, room);
  await expect(member(annPage, bob)).toBeVisible();
  const notify = bobPage.getByLabel('Notify');
  await expect(notify).toHaveValue('mentions');

  await test.step('"@" and the start of a name offer the accounts here; Tab takes the first', async () => {
    const suggestions = annPage.getByRole('list', { name: 'Mention suggestions (Tab takes the first)' });
    await expect(suggestions).toBeHidden();
    await composer(annPage).pressSequentially(`Hi @${bob.slice(0, 5)}`);
    await expect(suggestions).toBeVisible();
    await expect(suggestions.getByRole('button')).toHaveText([`@${bob}`]);
    await composer(annPage).press('Tab');
    await expect(composer(annPage)).toHaveValue(`Hi @${bob} `);
    await expect(composer(annPage)).toBeFocused();
    await expect(suggestions).toBeHidden();
    await composer(annPage).fill('');
  });

  await setHidden(bobPage, true);
  const plain = `Nothing for you here ${uniqueSuffix()}`;
  await test.step('by default a plain message does not notify', async () => {
    await sendMessage(annPage, plain);
    // The page notifies as the message arrives, before it shows it.
    await expect(messageWithText(bobPage, plain)).toBeVisible();
    expect(await notes(bobPage)).toEqual([]);
  });

  const mention = `@${bob} can you review the release notes?`;
  await test.step('a mention does: "<who> mentioned you in #<room>", with the text', async () => {
    await composer(annPage).pressSequentially(`@${bob.slice(0, 5)}`);
    await composer(annPage).press('Tab');
    await composer(annPage).pressSequentially('can you review the release notes?');
    await composer(annPage).press('Enter');
    await expect(messageWithText(annPage, mention)).toBeVisible();
    await expect.poll(() => notes(bobPage)).toEqual([{ title: `${ann} mentioned you in #${room}`, body: mention }]);
    const received = messageWithText(bobPage, mention);
    await expect(received).toHaveClass(/\bmentioned\b/);
    await expect(received.locator('.text span.mention')).toHaveText(`@${bob}`);
    await expect(messageWithText(bobPage, plain)).not.toHaveClass(/\bmentioned\b/);
    // For its author it is a mention of someone else.
    await expect(messageWithText(annPage, mention)).not.toHaveClass(/\bmentioned\b/);
  });

  await test.step('"every message": a plain one notifies too', async () => {
    await notify.selectOption({ label: 'every message' });
    expect(await bobPage.evaluate((r) => localStorage.getItem(`confab.notify.${r}`), room)).toBe('all');
    const news = `News for everyone ${uniqueSuffix()}`;
    await sendMessage(annPage, news);
    await expect
      .poll(async () => (await notes(bobPage)).at(-1))
      .toEqual({ title: `${ann} in #${room}`, body: news });
  });

  await test.step('"nothing": not even a mention notifies', async () => {
    await notify.selectOption({ label: 'nothing' });
    expect(await bobPage.evaluate((r) => localStorage.getItem(`confab.notify.${r}`), room)).toBe('none');
    const count = (await notes(bobPage)).length;
    const quiet = `@${bob} this stays quiet`;
    await sendMessage(annPage, quiet);
    await expect(messageWithText(bobPage, quiet)).toBeVisible();
    expect(await notes(bobPage)).toHaveLength(count);
  });

  await test.step('a visible tab is not notified, whatever the setting', async () => {
    await notify.selectOption({ label: 'every message' });
    await setHidden(bobPage, false);
    const count = (await notes(bobPage)).length;
    const seen = `You can see this one ${uniqueSuffix()}`;
    await sendMessage(annPage, seen);
    await expect(messageWithText(bobPage, seen)).toBeVisible();
    expect(await notes(bobPage)).toHaveLength(count);
  });

  await test.step('the setting is kept per room across a reload', async () => {
    await bobPage.reload();
    await expectInRoom(bobPage, room);
    await expect(notify).toHaveValue('all');
  });
});

test('choosing a notification setting asks for permission; "nothing" does not', async ({ browser }) => {
  const room = uniqueName('perm');
  const context = await browser.newContext();
  await context.addInitScript(fakeNotifications, 'default');
  const page = await context.newPage();
  await enterAs(page, uniqueName('nia'), room);
  const asks = () => page.evaluate(() => window.__permissionAsks ?? 0);

  await page.getByLabel('Notify').selectOption({ label: 'nothing' });
  expect(await page.evaluate((r) => localStorage.getItem(`confab.notify.${r}`), room)).toBe('none');
  expect(await asks()).toBe(0);
  await page.getByLabel('Notify').selectOption({ label: 'every message' });
  await expect.poll(asks).toBe(1);
  expect(await page.evaluate((r) => localStorage.getItem(`confab.notify.${r}`), room)).toBe('all');
});

test('a room with unread mentions says so in the sidebar', async ({ browser }) => {
  const room = uniqueName('ping');
  const elsewhere = uniqueName('away');
  const ann = uniqueName('ann');
  const bob = uniqueName('bob');
  const annPage = await openAsUser(browser, ann, room);
  const bobPage = await openAsUser(browser, bob, room);
  await expect(member(annPage, bob)).toBeVisible();
  await joinRoom(bobPage, elsewhere);
  const link = roomLink(bobPage, room);
  await expect(link.getByTestId('unread')).toHaveCount(0);

  const mention = `@${bob} the build is red`;
  const plain = `Never mind, it was flaky ${uniqueSuffix()}`;
  await test.step('a mention: "@1" beside the unread count', async () => {
    await sendMessage(annPage, mention);
    await expect(link.getByTestId('mentions')).toHaveText('@1');
    await expect(link.getByTestId('unread')).toHaveText('1');
    await expect(link).toHaveAccessibleName(`${room}, 1 unread, 1 mentioning you`);
  });

  await test.step('a plain message counts as unread, not as a mention', async () => {
    await sendMessage(annPage, plain);
    await expect(link.getByTestId('unread')).toHaveText('2');
    await expect(link.getByTestId('mentions')).toHaveText('@1');
  });

  await test.step('opening the room clears both and marks the mention', async () => {
    await link.click();
    await expectInRoom(bobPage, room);
    await expect(link.getByTestId('unread')).toHaveCount(0);
    await expect(link.getByTestId('mentions')).toHaveCount(0);
    await expect(messageWithText(bobPage, mention)).toHaveClass(/\bmentioned\b/);
    await expect(messageWithText(bobPage, plain)).not.toHaveClass(/\bmentioned\b/);
  });
});

test('reading a room in one tab clears its unread count in the account\'s other tab', async ({ browser }) => {
  const room = uniqueName('read');
  const other = uniqueName('other');
  const uma = uniqueName('uma');
  const tab1 = await openAsUser(browser, uma, room);
  await joinRoom(tab1, other);
  // A second tab of the same browser: the same account, and the same joined rooms.
  const tab2 = await tab1.context().newPage();
  await tab2.goto(`/r/${other}`);
  await expectInRoom(tab2, other);
  await expect(roomLink(tab2, room)).toBeVisible();
  const guest = await openAs(browser, uniqueName('vic'), room);

  const first = [`One ${uniqueSuffix()}`, `Two ${uniqueSuffix()}`];
  await test.step('both tabs count the new messages', async () => {
    for (const text of first) await sendMessage(guest, text);
    for (const tab of [tab1, tab2]) await expect(roomLink(tab, room).getByTestId('unread')).toHaveText('2');
  });

  await test.step('reading them in tab 1 clears the count in tab 2', async () => {
    await roomLink(tab1, room).click();
    await expectInRoom(tab1, room);
    for (const text of first) await expect(messageWithText(tab1, text)).toBeVisible();
    // Never read before: no "New messages" line.
    await expect(tab1.getByTestId('new-divider')).toHaveCount(0);
    await expect(roomLink(tab1, room).getByTestId('unread')).toHaveCount(0);
    await expect(roomLink(tab2, room).getByTestId('unread')).toHaveCount(0);
  });

  const later = [`Three ${uniqueSuffix()}`, `Four ${uniqueSuffix()}`];
  await test.step('tab 1 leaves for another room; more messages come', async () => {
    await roomLink(tab1, other).click();
    await expectInRoom(tab1, other);
    for (const text of later) await sendMessage(guest, text);
    for (const tab of [tab1, tab2]) await expect(roomLink(tab, room).getByTestId('unread')).toHaveText('2');
  });

  await test.step('opening the room in tab 2 shows "New messages" above the first unread one', async () => {
    await tab2.goto(`/r/${room}`);
    await expectInRoom(tab2, room);
    const divider = tab2.getByTestId('new-divider');
    await expect(divider).toHaveText('New messages');
    await expect(divider).toHaveCount(1);
    // The line heads the first unread message (inside its item, or as the item before it).
    const firstUnread = tab2.locator(
      'li.message:has([data-testid="new-divider"]), [data-testid="new-divider"] + li.message',
    );
    await expect(firstUnread.locator('.text')).toHaveText(later[0]);
    await expect(messageItems(tab2).filter({ hasText: first[1] })).toBeVisible();
  });

  await test.step('and tab 1 hears that tab 2 read them', async () => {
    await expect(roomLink(tab1, room).getByTestId('unread')).toHaveCount(0);
    await expectOnline(tab1);
  });
});

test('search finds a message, and its hit opens the room at that message', async ({ browser }) => {
  test.setTimeout(60_000);
  const room = uniqueName('find');
  const sam = uniqueName('sam');
  const word = `quokka${uniqueSuffix()}`;
  const text = `The ${word} report is ready`;
  const page = await openAsUser(browser, sam, room);
  const seq = await seqOf(await sendMessage(page, text));
  // Over a page after it: the room opens at its latest 50, without this message.
  await postMessages(browser, room, Array.from({ length: 60 }, (_, i) => `Later note ${i + 1} in ${room}`));

  const hits = page.locator('ol.search-hits > li');
  await test.step('the sidebar\'s search leads to the results page, which lists the message', async () => {
    await searchMessages(page, word);
    await expect(hits).toHaveCount(1);
    const link = hits.getByRole('link');
    await expect(link).toHaveAttribute('href', `/r/${room}?at=${seq}`);
    await expect(link).toContainText(`#${room}`);
    await expect(link).toContainText(sam);
    await expect(hits.locator('.snippet')).toContainText(word);
    await expect(page.locator('#q')).toHaveValue(word);
  });

  await test.step('following the hit opens the room with the message in view', async () => {
    await hits.getByRole('link').click();
    await expect(page).toHaveURL(new RegExp(`/r/${room}\\?at=${seq}$`));
    await expectOnline(page);
    await expect(page.locator('section.room')).toHaveAttribute('data-live', 'true');
    const found = messageBySeq(page, seq);
    await expect(found).toHaveClass(/\bsought\b/);
    await expect(found.locator('.text')).toHaveText(text);
    await expect(found).toBeInViewport();
  });

  await test.step('a word nobody wrote finds nothing', async () => {
    await searchMessages(page, `nothing${uniqueSuffix()}`);
    await expect(page.getByRole('status').filter({ hasText: 'Nothing found.' })).toBeVisible();
    await expect(hits).toHaveCount(0);
  });
});

test('Markdown is rendered, and markup inside it stays text', async ({ browser }) => {
  const room = uniqueName('md');
  const annPage = await openAsUser(browser, uniqueName('ann'), room);
  const bobPage = await openAsUser(browser, uniqueName('bob'), room);
  const dialogs: string[] = [];
  watchDialogs(annPage, dialogs);
  watchDialogs(bobPage, dialogs);

  const tag = uniqueSuffix();
  const rich = [
    `**bold ${tag}** and *italic* and \`code()\``,
    '> quoted wisdom',
    '- apples',
    '- pears',
    '1. first',
    '2. second',
    '```',
    'let x = **1**;',
    '```',
  ].join('\n');
  const payload = '<img src=x onerror=alert(1)>';
  const attack = `**${payload}** and <script>alert(2)</script> ${tag}`;

  await submitMessage(annPage, rich);
  await submitMessage(annPage, attack);
  await sendMessage(annPage, '🎉');
  await sendMessage(annPage, `🎉 ${tag}`);

  const check = async (page: Page) => {
    const formatted = messageItems(page).filter({ has: page.locator('.text strong', { hasText: `bold ${tag}` }) });
    const text = formatted.locator('.text');
    await expect(text.locator('strong')).toHaveText(`bold ${tag}`);
    await expect(text.locator('em')).toHaveText('italic');
    await expect(text.locator('p code')).toHaveText('code()');
    await expect(text.locator('blockquote')).toHaveText('quoted wisdom');
    await expect(text.locator('ul > li')).toHaveText(['apples', 'pears']);
    await expect(text.locator('ol > li')).toHaveText(['first', 'second']);
    // Code is verbatim: its markers are not styles.
    await expect(text.locator('pre > code')).toHaveText('let x = **1**;');
    await expect(text.locator('pre strong')).toHaveCount(0);

    const hostile = messageItems(page).filter({ hasText: `alert(2)</script> ${tag}` });
    await expect(hostile.locator('.text strong')).toHaveText(payload);
    expect(await hostile.locator('.text').textContent()).toBe(`${payload} and <script>alert(2)</script> ${tag}`);
    await expect(page.getByTestId('messages').locator('img, script')).toHaveCount(0);

    await expect(messageWithText(page, '🎉').locator('.text')).toHaveClass(/\bjumbo\b/);
    await expect(messageWithText(page, `🎉 ${tag}`).locator('.text')).not.toHaveClass(/\bjumbo\b/);
  };

  await test.step('live, for the sender and the receiver', async () => {
    await check(annPage);
    await check(bobPage);
  });

  await test.step('server-rendered, after a reload', async () => {
    await bobPage.reload();
    await expectInRoom(bobPage, room);
    await check(bobPage);
  });

  expect(dialogs, 'no script from a message may run').toEqual([]);
});
