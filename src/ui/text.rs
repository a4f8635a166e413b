//! Times on screen.

/// "14:05" from Unix ms: the reader's local time in the browser, UTC on the server (the
/// browser re-renders it once mounted, so hydration still matches).
pub fn clock_time(ts: i64, local: bool) -> String {
    #[cfg(feature = "hydrate")]
    if local {
        let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ts as f64));
        return format!("{:02}:{:02}", d.get_hours(), d.get_minutes());
    }
    let _ = local;
    let mins = ts.div_euclid(60_000);
    format!("{:02}:{:02}", mins.div_euclid(60).rem_euclid(24), mins.rem_euclid(60))
}

#[cfg(test)]
mod tests {
    use super::clock_time;

    #[test]
    fn utc_clock() {
        // 2023-11-14T22:13:20Z
        assert_eq!(clock_time(1_700_000_000_000, false), "22:13");
        assert_eq!(clock_time(0, false), "00:00");
    }
}
