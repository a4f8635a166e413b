//! A small JSON reader and writer for the browser's side of the protocol.
//!
//! serde's derived decoders (one visitor per type, through serde_json's generic parser)
//! were about a third of the WASM bundle's code. The browser reads a handful of frame
//! shapes, all of them objects of strings, integers, booleans and arrays of those: one
//! untyped tree and a few accessors decode them at a fraction of the size. Numbers are
//! integers (the protocol has no others): a number with a fraction or an exponent reads
//! as `Null`, which no field accepts. The server still speaks serde (`protocol`'s types);
//! `wire`'s tests check the two agree on every frame.

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

/// Nesting deeper than this is refused (the protocol nests four levels at most).
const MAX_DEPTH: usize = 32;

impl Json {
    pub fn parse(text: &str) -> Option<Json> {
        let mut p = Parser { s: text.as_bytes(), at: 0 };
        let value = p.value(0)?;
        p.space();
        (p.at == p.s.len()).then_some(value)
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn str(&self, key: &str) -> Option<String> {
        self.get(key)?.as_str().map(str::to_owned)
    }

    /// A string member, "" when absent.
    pub fn string(&self, key: &str) -> String {
        self.str(key).unwrap_or_default()
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            Json::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        self.int(key).and_then(|n| u64::try_from(n).ok())
    }

    pub fn u32(&self, key: &str) -> Option<u32> {
        self.int(key).and_then(|n| u32::try_from(n).ok())
    }

    /// A boolean member, false when absent.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some(Json::Bool(true)))
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The items of an array member (none when absent).
    pub fn items(&self, key: &str) -> &[Json] {
        match self.get(key) {
            Some(Json::Arr(items)) => items,
            _ => &[],
        }
    }

    /// An array member of strings (non-strings skipped).
    pub fn strings(&self, key: &str) -> Vec<String> {
        self.items(key).iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
    }
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn space(&mut self) {
        while self.at < self.s.len() && matches!(self.s[self.at], b' ' | b'\n' | b'\r' | b'\t') {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.space();
        if self.s.get(self.at) == Some(&b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn word(&mut self, w: &[u8], v: Json) -> Option<Json> {
        if self.s[self.at..].starts_with(w) {
            self.at += w.len();
            Some(v)
        } else {
            None
        }
    }

    fn value(&mut self, depth: usize) -> Option<Json> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.space();
        match *self.s.get(self.at)? {
            b'{' => {
                self.at += 1;
                let mut members = Vec::new();
                if self.eat(b'}') {
                    return Some(Json::Obj(members));
                }
                loop {
                    self.space();
                    let key = self.string()?;
                    if !self.eat(b':') {
                        return None;
                    }
                    let v = self.value(depth + 1)?;
                    members.push((key, v));
                    if self.eat(b'}') {
                        return Some(Json::Obj(members));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                if self.eat(b']') {
                    return Some(Json::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    if self.eat(b']') {
                        return Some(Json::Arr(items));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'"' => self.string().map(Json::Str),
            b't' => self.word(b"true", Json::Bool(true)),
            b'f' => self.word(b"false", Json::Bool(false)),
            b'n' => self.word(b"null", Json::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn number(&mut self) -> Option<Json> {
        let start = self.at;
        let negative = self.s[self.at] == b'-';
        if negative {
            self.at += 1;
        }
        let mut n: i64 = 0;
        let mut overflow = false;
        let digits_from = self.at;
        while let Some(d @ b'0'..=b'9') = self.s.get(self.at).copied() {
            match n.checked_mul(10).and_then(|n| n.checked_add(i64::from(d - b'0'))) {
                Some(next) => n = next,
                None => overflow = true,
            }
            self.at += 1;
        }
        if self.at == digits_from {
            return None;
        }
        let mut integer = !overflow;
        while let Some(b'.' | b'e' | b'E' | b'+' | b'-' | b'0'..=b'9') = self.s.get(self.at).copied() {
            integer = false;
            self.at += 1;
        }
        let _ = start;
        Some(if integer { Json::Int(if negative { -n } else { n }) } else { Json::Null })
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.s.get(self.at..self.at + 4)?;
        let mut v = 0;
        for d in digits {
            v = v * 16 + char::from(*d).to_digit(16)?;
        }
        self.at += 4;
        Some(v)
    }

    fn string(&mut self) -> Option<String> {
        if self.s.get(self.at) != Some(&b'"') {
            return None;
        }
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let b = *self.s.get(self.at)?;
            self.at += 1;
            match b {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = *self.s.get(self.at)?;
                    self.at += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if self.s.get(self.at..self.at + 2) != Some(b"\\u") {
                                    return None;
                                }
                                self.at += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return None;
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            char::from_u32(code)?
                        }
                        _ => return None,
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                0..=0x1f => return None,
                b => out.push(b),
            }
        }
    }
}

/// Writes JSON: an object is built member by member.
#[derive(Default)]
pub struct Writer {
    out: String,
}

impl Writer {
    /// Starts an object with its `"type"`.
    pub fn object(kind: &str) -> Writer {
        let mut w = Writer { out: String::from("{") };
        w.str("type", kind);
        w
    }

    fn key(&mut self, key: &str) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        quote(&mut self.out, key);
        self.out.push(':');
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        quote(&mut self.out, value);
        self
    }

    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.str(key, v);
        }
        self
    }

    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        self.key(key);
        self.out.push_str(&value.to_string());
        self
    }

    pub fn uint(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        self.out.push_str(&value.to_string());
        self
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
        self
    }

    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// Appends `s` as a JSON string.
fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let n = c as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[n >> 4]));
                out.push(char::from(HEX[n & 15]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_serde_writes() {
        let text = serde_json::json!({
            "s": "a\"b\\c\n\u{1}é😀</script>",
            "n": -42, "big": 9_007_199_254_740_993_i64, "t": true, "f": false, "z": null,
            "a": [1, "x", [], {}], "o": {"k": "v"}
        })
        .to_string();
        let v = Json::parse(&text).unwrap();
        assert_eq!(v.str("s").unwrap(), "a\"b\\c\n\u{1}é😀</script>");
        assert_eq!(v.int("n"), Some(-42));
        assert_eq!(v.int("big"), Some(9_007_199_254_740_993));
        assert!(v.flag("t") && !v.flag("f") && !v.flag("missing"));
        assert_eq!(v.get("z"), Some(&Json::Null));
        assert_eq!(v.items("a").len(), 4);
        assert_eq!(v.get("o").unwrap().string("k"), "v");
        assert_eq!(Json::parse(r#""\ud83d\ude00""#), Some(Json::Str("😀".into())));
    }

    #[test]
    fn refuses_what_is_not_json() {
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "\"open", "tru", "01x", "{} x", "\"\\ud83d\"", "\"a\u{1}\""]
        {
            assert_eq!(Json::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Json::parse("1.5"), Some(Json::Null), "not an integer");
        assert_eq!(Json::parse("99999999999999999999"), Some(Json::Null), "too big");
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert_eq!(Json::parse(&deep), None);
    }

    #[test]
    fn writes_what_serde_reads() {
        let mut w = Writer::object("send");
        w.str("text", "a\"b\\\n\u{1}é").uint("seq", 7).int("n", -1).bool("on", false).opt_str("x", None);
        let text = w.finish();
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"type": "send", "text": "a\"b\\\n\u{1}é", "seq": 7, "n": -1, "on": false})
        );
    }
}
