import AxeBuilder from '@axe-core/playwright';
import type { Page } from '@playwright/test';
import {
  adminUnavailable,
  clickMessageAction,
  composer,
  createAdmin,
  createRoom,
  emojiPicker,
  expect,
  messageWithText,
  HYDRATION_TIMEOUT,
  inviteToRoom,
  openAs,
  openAsUser,
  openSettings,
  PASSWORD,
  postMessages,
  reactionButton,
  reactTo,
  replyQuote,
  searchMessages,
  sendMessage,
  signIn,
  submitMessage,
  signUp,
  test,
  uniqueName,
} from './helpers';

/** Fails on any axe violation of impact "serious" or "critical", listing them. */
async function expectNoSeriousViolations(page: Page): Promise<void> {
  const { violations } = await new AxeBuilder({ page }).analyze();
  const serious = violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => {
      const where = v.nodes.map((n) => n.target.join(' ')).join(', ');
      return `${v.id} [${v.impact}] ${v.help} (${v.helpUrl})\n    at: ${where}`;
    });
  expect(serious, `serious or critical accessibility violations on ${page.url()}:\n${serious.join('\n')}`).toEqual([]);
}

test('lobby with the nickname dialog open', async ({ page }) => {
  await page.goto('/');
  await expect(page.locator('#nick-input')).toBeVisible({ timeout: HYDRATION_TIMEOUT });
  await expectNoSeriousViolations(page);
});

test('lobby after choosing a nickname', async ({ browser }) => {
  const page = await openAs(browser, uniqueName('ada'));
  await expect(page.locator('#nick-input')).toHaveCount(0);
  await expectNoSeriousViolations(page);
});

test('room with messages', async ({ browser }) => {
  const room = uniqueName('a11y');
  const page = await openAs(browser, uniqueName('ada'), room);
  await sendMessage(page, 'Hello, accessible world');
  await sendMessage(page, 'A link: https://example.org/a11y');
  await sendMessage(page, 'And a third message');
  await expectNoSeriousViolations(page);
});

test('room with older messages to load', async ({ browser }) => {
  const room = uniqueName('a11y-old');
  await postMessages(browser, room, Array.from({ length: 60 }, (_, i) => `Older message ${i + 1}`));
  const page = await openAs(browser, uniqueName('ada'), room);
  // The fallback button at the top of the list, with the latest 50 below it.
  await expect(page.getByTestId('messages').getByRole('button', { name: 'Load older messages' })).toBeAttached();
  await expectNoSeriousViolations(page);
});

// Conversations: reactions, replies, the emoji picker, an edit in progress.

test('room with reactions and a reply', async ({ browser }) => {
  const room = uniqueName('a11y-conv');
  const ann = uniqueName('ann');
  const annPage = await openAsUser(browser, ann, room);
  const bobPage = await openAsUser(browser, uniqueName('bob'), room);
  const question = await sendMessage(annPage, 'Shall we ship today?');
  const onBob = messageWithText(bobPage, 'Shall we ship today?');
  await reactTo(bobPage, onBob, 'party');
  await reactTo(annPage, question, 'rocket');
  await clickMessageAction(onBob, 'Reply');
  const answer = `Yes, after **lunch**, ${ann}`;
  await submitMessage(bobPage, answer);
  const reply = annPage.getByTestId('messages').locator('li.message', { hasText: `Yes, after lunch, ${ann}` });
  await expect(replyQuote(reply)).toHaveAccessibleName(`Reply to ${ann} Shall we ship today?`);
  await expect(reply.locator('.text strong')).toHaveText('lunch');
  // One reaction pressed, one not, on the page scanned.
  await expect(reactionButton(question, '🎉')).toHaveAttribute('aria-pressed', 'false');
  await expect(reactionButton(question, '🚀')).toHaveAttribute('aria-pressed', 'true');
  await expectNoSeriousViolations(annPage);
});

test('room with the emoji picker open', async ({ browser }) => {
  const room = uniqueName('a11y-pick');
  const page = await openAsUser(browser, uniqueName('ada'), room);
  const message = await sendMessage(page, 'Pick something for this');
  await clickMessageAction(message, 'React');
  await expect(emojiPicker(page)).toBeVisible();
  await emojiPicker(page).getByLabel('Search emoji').fill('heart');
  await expect(emojiPicker(page).getByRole('button', { name: 'React with ❤️' })).toBeVisible();
  await expectNoSeriousViolations(page);
});

test('room while editing a message', async ({ browser }) => {
  const room = uniqueName('a11y-edit');
  const page = await openAsUser(browser, uniqueName('ada'), room);
  const message = await sendMessage(page, 'A message with a typo in it');
  await clickMessageAction(message, 'Edit');
  await expect(page.getByTestId('editing')).toBeVisible();
  await expect(composer(page)).toHaveValue('A message with a typo in it');
  await expectNoSeriousViolations(page);
});

test('search results page', async ({ browser }) => {
  const room = uniqueName('a11y-find');
  const word = `wombat${uniqueName('w').replace(/-/g, '')}`;
  const page = await openAsUser(browser, uniqueName('ada'), room);
  await sendMessage(page, `The ${word} is found`);
  await sendMessage(page, `Another ${word} here`);
  await searchMessages(page, word);
  await expect(page.locator('ol.search-hits > li')).toHaveCount(2);
  await expectNoSeriousViolations(page);
});

// The server-rendered account pages.

test('sign-in page', async ({ page }) => {
  await page.goto('/login');
  await expect(page.getByRole('heading', { name: 'Create an account' })).toBeVisible();
  await expectNoSeriousViolations(page);
});

test('sign-in page at 360 px', async ({ page }) => {
  await page.setViewportSize({ width: 360, height: 740 });
  await page.goto('/login');
  await expect(page.getByRole('heading', { name: 'Create an account' })).toBeVisible();
  // Nothing wider than the screen: no sideways scrolling on a phone.
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(360);
  await expectNoSeriousViolations(page);
});

test('sign-in page showing an error', async ({ page }) => {
  await page.goto('/login');
  await page.locator('#login-username').fill(uniqueName('nobody'));
  await page.locator('#login-password').fill(`${PASSWORD} wrong`);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await expect(page.getByRole('alert')).toHaveText('wrong username or password');
  await expectNoSeriousViolations(page);
});

test('account page with a new API token', async ({ page }) => {
  await signUp(page, uniqueName('ada'));
  await page.goto('/account');
  await page.locator('#token-name').fill('a11y bot');
  await page.getByRole('button', { name: 'Create token' }).click();
  await expect(page.getByRole('region', { name: 'Your new API token' }).locator('pre code')).not.toBeEmpty();
  await expect(page.getByRole('button', { name: 'Revoke the token a11y bot' })).toBeVisible();
  await expectNoSeriousViolations(page);
});

test('room settings as its owner', async ({ browser }) => {
  const room = uniqueName('a11y-set');
  const member = uniqueName('mel');
  // Someone to invite, so the members table has a row with actions.
  await (await openAsUser(browser, member)).context().close();
  const page = await openAsUser(browser, uniqueName('owen'));
  await createRoom(page, room, { visibility: 'private', topic: 'Settings under test' });
  await inviteToRoom(page, room, member);
  await openSettings(page, room);
  await expect(page.getByRole('button', { name: `Make ${member} moderator` })).toBeVisible();
  await expectNoSeriousViolations(page);
});

test('admin page as an admin', async ({ page }) => {
  const unavailable = adminUnavailable();
  test.skip(unavailable !== null, unavailable ?? '');
  const admin = uniqueName('root');
  await createAdmin(admin);
  await signIn(page, admin, PASSWORD, '/admin');
  await expect(page.getByRole('heading', { name: 'Admin', level: 1 })).toBeVisible();
  await expect(page.getByRole('row').filter({ hasText: admin })).toContainText('You');
  // With a new invite code on show, as on the account page's token.
  await page.getByRole('button', { name: 'Make an invite' }).click();
  await expect(page.getByRole('heading', { name: 'New invite code' })).toBeVisible();
  await expectNoSeriousViolations(page);
});
