import {
  chooseNick,
  composer,
  createRoom,
  expect,
  expectInRoom,
  expectOnline,
  expectSignedInChat,
  formDone,
  formError,
  HYDRATION_TIMEOUT,
  inviteToRoom,
  joinRoom,
  member,
  memberRow,
  messageWithText,
  moderate,
  newUserPage,
  notice,
  openAsUser,
  PASSWORD,
  roomLink,
  roomSection,
  sendMessage,
  signIn,
  signOut,
  signUp,
  SocketRelay,
  test,
  uniqueName,
  uniqueSuffix,
  whoAmI,
} from './helpers';

// Accounts and access. Every journey makes its own accounts (sign-up is one Argon2 hash,
// well under a second) and never counts on who the run's first account, its admin, is.

test('sign up, sign out and sign in again', async ({ page, context }) => {
  const username = uniqueName('ada');
  const displayName = `Ada ${uniqueSuffix()}`;
  const room = uniqueName('acct');
  const text = `First words of ${username}`;

  await test.step('the new account is signed in: its name in the sidebar, no nickname dialog', async () => {
    await signUp(page, username, PASSWORD, { displayName });
    await expectSignedInChat(page, displayName);
    await expect(whoAmI(page).getByRole('link')).toHaveAttribute('href', '/account');
    await expect(page.getByRole('link', { name: 'New room' })).toBeVisible();
    await expect(page.getByRole('link', { name: 'Message someone' })).toBeVisible();
    const cookie = (await context.cookies()).find((c) => c.name === 'confab_session');
    expect(cookie?.httpOnly, 'the session cookie is HttpOnly').toBe(true);
  });

  await test.step('it writes under its display name, not as a guest', async () => {
    await joinRoom(page, room);
    const own = await sendMessage(page, text);
    await expect(own).toHaveClass(/\bmine\b/);
    await expect(own.locator('.author')).toHaveText(displayName);
    await expect(own.locator('.author')).not.toHaveClass(/\bguest\b/);
    await expect(member(page, displayName).locator('a')).not.toHaveClass(/\bguest\b/);
  });

  await test.step('signing out ends the session: the chat is a guest\'s again', async () => {
    await signOut(page);
    expect((await context.cookies()).some((c) => c.name === 'confab_session' && c.value !== '')).toBe(false);
    await page.goto('/account');
    await expect(page).toHaveURL((url) => url.pathname === '/login' && url.searchParams.get('next') === '/account');
    await page.goto('/');
    await expect(page.locator('#nick-input')).toBeVisible({ timeout: HYDRATION_TIMEOUT });
    await expect(whoAmI(page)).toHaveText('Sign in (you are a guest)');
  });

  await test.step('the username is taken, and a wrong password is refused', async () => {
    await page.goto('/login');
    await page.locator('#signup-username').fill(username);
    await page.locator('#signup-password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Create account' }).click();
    await expect(formError(page)).toHaveText('that username is taken');

    await page.locator('#login-username').fill(username);
    await page.locator('#login-password').fill(`${PASSWORD} but wrong`);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await expect(formError(page)).toHaveText('wrong username or password');
  });

  await test.step('signing in again leads back to the room, where the old message is still mine', async () => {
    await signIn(page, username, PASSWORD, `/r/${room}`);
    await expectSignedInChat(page, displayName);
    await expectInRoom(page, room);
    await expect(messageWithText(page, text)).toHaveClass(/\bmine\b/);
  });
});

test('a private room is invisible to others until they are invited', async ({ browser }) => {
  const room = uniqueName('secret');
  const olga = uniqueName('olga');
  const pete = uniqueName('pete');
  const plan = `The plan of ${olga}`;

  const olgaPage = await openAsUser(browser, olga);
  await createRoom(olgaPage, room, { visibility: 'private', topic: 'Only for the invited' });
  await expect(olgaPage.locator('.room-header .topic')).toHaveText('Only for the invited');
  await sendMessage(olgaPage, plan);
  const petePage = await openAsUser(browser, pete);

  await test.step('the lobby lists it for its owner only', async () => {
    await olgaPage.goto('/');
    await expect(olgaPage.locator('.directory-room', { hasText: room })).toBeVisible();
    await petePage.goto('/');
    await expectOnline(petePage);
    await expect(petePage.getByRole('heading', { name: 'Rooms', level: 1 })).toBeVisible();
    await expect(petePage.locator('.directory-room', { hasText: room })).toHaveCount(0);
  });

  await test.step('to anyone else its page and settings are "not found", with no history', async () => {
    const response = await petePage.goto(`/r/${room}`);
    expect(response?.status()).toBe(404);
    expect(await response?.text()).not.toContain(plan);
    await expect(notice(petePage)).toContainText('no such room', { timeout: HYDRATION_TIMEOUT });
    await expect(roomSection(petePage)).toHaveAttribute('data-live', 'false');
    await expect(messageWithText(petePage, plan)).toHaveCount(0);

    const settingsPage = await petePage.context().newPage();
    const settings = await settingsPage.goto(`/r/${room}/settings`);
    expect(settings?.status()).toBe(404);
    await expect(settingsPage.getByRole('heading', { name: 'Not found' })).toBeVisible();
    await settingsPage.close();
  });

  await test.step('once invited, they are told so, and the room opens for them', async () => {
    await inviteToRoom(olgaPage, room, pete);
    await expect(memberRow(olgaPage, pete)).toBeVisible();
    await expect(notice(petePage)).toContainText(`${olga} invited you to #${room}.`);

    const response = await petePage.goto(`/r/${room}`);
    expect(response?.status()).toBe(200);
    await expectInRoom(petePage, room);
    await expect(messageWithText(petePage, plan)).toBeVisible();
  });

  await test.step('the two talk there', async () => {
    await olgaPage.goto(`/r/${room}`);
    await expectInRoom(olgaPage, room);
    await expect(member(olgaPage, pete)).toBeVisible();
    const reply = `Count me in, ${olga}`;
    await sendMessage(petePage, reply);
    await expect(messageWithText(olgaPage, reply)).toBeVisible();
  });
});

test('a moderator kicks and bans; the banned user is told why and cannot come back', async ({ browser }) => {
  const room = uniqueName('modded');
  const mona = uniqueName('mona');
  const bob = uniqueName('bob');

  // Mona makes the room, so she is its owner: a moderator and more.
  const monaPage = await openAsUser(browser, mona);
  await createRoom(monaPage, room);
  const bobPage = await openAsUser(browser, bob, room);
  await expect(member(monaPage, bob)).toBeVisible();
  // Her settings in a second tab, so her chat stays open beside it.
  const monaSettings = await monaPage.context().newPage();

  await test.step('kicked: bob\'s window leaves the room at once and says who did it', async () => {
    await moderate(monaSettings, room, bob, 'kick');
    await expect(notice(bobPage)).toContainText(`You were removed from #${room} by ${mona}.`);
    await expect(roomLink(bobPage, room)).toHaveCount(0);
    await expect(member(monaPage, bob)).toHaveCount(0);
  });

  await test.step('a kick is not a ban: bob may come back to a public room', async () => {
    await bobPage.goto(`/r/${room}`);
    await expectInRoom(bobPage, room);
    await expect(member(monaPage, bob)).toBeVisible();
  });

  await test.step('muted: bob\'s composer is disabled and says why', async () => {
    await moderate(monaSettings, room, bob, 'mute');
    await expect(composer(bobPage)).toBeDisabled();
    await expect(composer(bobPage)).toHaveAttribute('placeholder', 'You are muted in this room');
    await expect(memberRow(monaSettings, bob)).toContainText('muted');
  });

  await test.step('banned from the members table: bob\'s window says so', async () => {
    await memberRow(monaSettings, bob).getByRole('button', { name: `Ban ${bob}`, exact: true }).click();
    await expect(formDone(monaSettings)).toHaveText('Done.');
    await expect(memberRow(monaSettings, bob)).toContainText('banned');
    await expect(memberRow(monaSettings, bob).getByRole('button', { name: `Unban ${bob}`, exact: true })).toBeVisible();
    await expect(notice(bobPage)).toContainText(`You were banned from #${room} by ${mona}.`);
    await expect(roomLink(bobPage, room)).toHaveCount(0);
    await expect(member(monaPage, bob)).toHaveCount(0);
  });

  await test.step('opening the room again, bob is refused and not joined', async () => {
    await bobPage.goto(`/r/${room}`);
    await expect(notice(bobPage)).toContainText('you are banned from this room', { timeout: HYDRATION_TIMEOUT });
    await expect(roomSection(bobPage)).toHaveAttribute('data-live', 'false');
    await expect(member(monaPage, bob)).toHaveCount(0);
    const stillThere = `Still here without ${bob}`;
    await sendMessage(monaPage, stillThere);
    await expect(messageWithText(bobPage, stillThere)).toHaveCount(0);
  });
});

test('two people talk in a direct message that only they can see', async ({ browser }) => {
  const meeting = uniqueName('meet');
  const alice = uniqueName('alice');
  const bob = uniqueName('bob');
  // Display names with a space: the member list links by display name, and /dm takes either.
  const aliceName = `Alice ${uniqueSuffix()}`;
  const bobName = `Bob ${uniqueSuffix()}`;
  const label = `${aliceName} & ${bobName}`;

  const alicePage = await openAsUser(browser, alice, meeting, { displayName: aliceName });
  const bobPage = await openAsUser(browser, bob, meeting, { displayName: bobName });
  let dm = '';

  await test.step('alice opens a conversation from bob\'s name in the member list', async () => {
    const link = member(alicePage, bobName).getByRole('link');
    await expect(link).toHaveAttribute('href', `/dm?to=${encodeURIComponent(bobName)}`);
    await link.click();
    await expect(alicePage.locator('#dm-to')).toHaveValue(bobName);
    await alicePage.getByRole('button', { name: 'Open conversation' }).click();
    await expect(alicePage).toHaveURL(/\/r\/dm-\d+-\d+$/);
    dm = new URL(alicePage.url()).pathname.slice('/r/'.length);
    await expectInRoom(alicePage, dm);
    await expect(alicePage.locator('.room-header .topic')).toHaveText(label);
    await expect(roomLink(alicePage, dm)).toHaveAccessibleName(label);
  });

  const hello = `Just between us, ${bob}`;
  await test.step('bob finds it under "Direct messages" and reads it', async () => {
    await sendMessage(alicePage, hello);
    const dms = bobPage.locator('nav.sidebar div', { has: bobPage.getByRole('heading', { name: 'Direct messages' }) });
    await expect(dms).toBeVisible();
    await expect(roomLink(bobPage, dm)).toHaveAccessibleName(label);
    await dms.locator(roomLink(bobPage, dm)).click();
    await expectInRoom(bobPage, dm);
    await expect(messageWithText(bobPage, hello)).toBeVisible();
    const reply = `Got it, ${alice}`;
    await sendMessage(bobPage, reply);
    await expect(messageWithText(alicePage, reply)).toBeVisible();
  });

  await test.step('to anyone else the conversation is "not found", with no history', async () => {
    const other = await newUserPage(browser);
    const response = await other.goto(`/r/${dm}`);
    expect(response?.status()).toBe(404);
    expect(await response?.text()).not.toContain(hello);
    const settings = await other.goto(`/r/${dm}/settings`);
    expect(settings?.status()).toBe(404);
  });
});

test('a guest cannot take a registered name, in small letters or capitals', async ({ browser }) => {
  const room = uniqueName('names');
  const alice = uniqueName('alice');
  const guest = uniqueName('guest');
  const refusal = 'that name belongs to a registered user; sign in or pick another';

  const alicePage = await openAsUser(browser, alice, room);
  const guestPage = await newUserPage(browser);
  const relay = await SocketRelay.install(guestPage);
  await guestPage.goto(`/r/${room}`);
  const input = guestPage.locator('#nick-input');
  await expect(input).toBeVisible({ timeout: HYDRATION_TIMEOUT });
  await expect(guestPage.getByRole('dialog').getByRole('link', { name: 'Sign in or create an account' })).toHaveAttribute(
    'href',
    `/login?next=/r/${room}`,
  );

  const refusals = () =>
    SocketRelay.ofType(relay.toPage, 'error').filter((frame) => frame.code === 'nick_taken').length;
  for (const [i, nick] of [alice, alice.toUpperCase()].entries()) {
    await test.step(`"${nick}" is refused`, async () => {
      await input.fill(nick);
      await guestPage.getByRole('button', { name: 'Start chatting as a guest' }).click();
      // Counted on the wire: the dialog's text alone would still show the first refusal.
      await expect.poll(refusals).toBe(i + 1);
      await expect(guestPage.locator('#nick-error')).toHaveText(refusal);
      await expect(input).toBeVisible();
      // Alice alone in the room: no guest joined under her name.
      await expect(alicePage.getByTestId('members').locator('li')).toHaveCount(1);
    });
  }

  await test.step('a free name works, and the guest is marked as one', async () => {
    await chooseNick(guestPage, guest);
    await expectInRoom(guestPage, room);
    await expect(whoAmI(guestPage)).toHaveText('Sign in (you are a guest)');
    const text = `Hello from ${guest}`;
    await sendMessage(guestPage, text);
    await expect(messageWithText(alicePage, text).locator('.author')).toHaveClass(/\bguest\b/);
    await expect(member(alicePage, guest).locator('a')).toHaveClass(/\bguest\b/);
    await expect(member(alicePage, guest).locator('a')).not.toHaveAttribute('href');
    // A guest cannot open a conversation: names are plain text to them.
    await expect(member(guestPage, alice).locator('a')).not.toHaveAttribute('href');
    await expect(member(guestPage, alice).locator('a')).not.toHaveClass(/\bguest\b/);
  });
});

test('signing out another session signs that browser out at once', async ({ browser }) => {
  const sam = uniqueName('sam');
  const room = uniqueName('revoke');

  const pageA = await openAsUser(browser, sam);
  const pageB = await newUserPage(browser);
  await signIn(pageB, sam, PASSWORD, `/r/${room}`);
  await expectSignedInChat(pageB, sam);
  await expectInRoom(pageB, room);

  await test.step('the account page lists both sessions, this one marked', async () => {
    await pageA.goto('/account');
    const rows = pageA.locator('tr[data-session]');
    await expect(rows).toHaveCount(2);
    await expect(rows.filter({ hasText: 'This session' })).toHaveCount(1);
    await expect(rows.getByRole('button', { name: /^Sign out the session from / })).toHaveCount(1);
  });

  await test.step('"Sign out" on the other session ends it', async () => {
    const other = pageA.locator('tr[data-session]').filter({ hasNotText: 'This session' });
    const id = await other.getAttribute('data-session');
    await other.getByRole('button', { name: /^Sign out the session from / }).click();
    await expect(formDone(pageA)).toHaveText('The session is signed out.');
    await expect(pageA.locator('tr[data-session]')).toHaveCount(1);
    await expect(pageA.locator(`tr[data-session="${id}"]`)).toHaveCount(0);
  });

  await test.step('B\'s open chat is signed out at once and says so', async () => {
    await expect(pageB.locator('#nick-input')).toBeVisible();
    await expect(pageB.locator('#nick-error')).toHaveText(
      'You were signed out (signed out). Sign in again, or chat as a guest.',
    );
    await expect(whoAmI(pageB)).not.toContainText('Signed in as');
  });

  await test.step('B\'s cookie no longer signs it in; A is still signed in', async () => {
    await pageB.goto('/account');
    await expect(pageB).toHaveURL((url) => url.pathname === '/login');
    await pageA.goto('/account');
    await expect(pageA.getByRole('heading', { name: 'Your account', level: 1 })).toBeVisible();
  });
});
