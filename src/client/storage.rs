//! What the browser remembers across visits, in localStorage.

pub const NICK: &str = "confab.nick";
pub const SESSION: &str = "confab.session";
const ROOMS: &str = "confab.rooms";

fn local() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

pub fn get(key: &str) -> Option<String> {
    local()?.get_item(key).ok()?.filter(|v| !v.is_empty())
}

pub fn set(key: &str, value: &str) {
    if let Some(s) = local() {
        let _ = s.set_item(key, value);
    }
}

pub fn remove(key: &str) {
    if let Some(s) = local() {
        let _ = s.remove_item(key);
    }
}

/// Joined rooms, so the sidebar and the resume survive a reload.
pub fn rooms() -> Vec<String> {
    get(ROOMS)
        .map(|v| v.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

pub fn save_rooms<'a>(rooms: impl Iterator<Item = &'a String>) {
    let list: Vec<&str> = rooms.map(String::as_str).collect();
    set(ROOMS, &list.join(","));
}
