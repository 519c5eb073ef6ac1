//! VERP return paths: `bounces+{mailing}.{client}.{mac}@example.com`, so a bounce names the
//! letter it is about and a forged one does not verify. The MAC is lower-case hex: some
//! receiving systems fold the case of the local part, which base64 would not survive.
//! The key is the installation's link secret, with a prefix of its own (an unsubscribe
//! token cannot be turned into a return path, nor the other way round).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// 80 bits: forging one means guessing it through the bounce address, one report at a time.
const MAC_BYTES: usize = 10;
const MAC_HEX: usize = MAC_BYTES * 2;

fn mac(secret: &[u8], mailing_id: i64, client_id: i64) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(b"verp:");
    m.update(&mailing_id.to_be_bytes());
    m.update(&client_id.to_be_bytes());
    m
}

pub fn token(secret: &[u8], mailing_id: i64, client_id: i64) -> String {
    let tag = mac(secret, mailing_id, client_id).finalize().into_bytes();
    format!(
        "{mailing_id}.{client_id}.{}",
        hex::encode(&tag[..MAC_BYTES])
    )
}

/// `local+TOKEN@domain` for the configured bounce address `local@domain`.
pub fn return_path(bounce_address: &str, secret: &[u8], mailing_id: i64, client_id: i64) -> String {
    let (local, domain) = bounce_address
        .rsplit_once('@')
        .unwrap_or((bounce_address, "localhost"));
    format!("{local}+{}@{domain}", token(secret, mailing_id, client_id))
}

/// The (mailing, client) of a token whose MAC is right (checked in constant time).
pub fn verify(secret: &[u8], token: &str) -> Option<(i64, i64)> {
    let mut parts = token.splitn(3, '.');
    let mailing_id: i64 = parts.next()?.parse().ok()?;
    let client_id: i64 = parts.next()?.parse().ok()?;
    let tag = hex::decode(parts.next()?.to_ascii_lowercase()).ok()?;
    if tag.len() != MAC_BYTES || mailing_id <= 0 || client_id <= 0 {
        return None;
    }
    mac(secret, mailing_id, client_id)
        .verify_truncated_left(&tag)
        .ok()
        .map(|_| (mailing_id, client_id))
}

/// Every `+M.C.HEX@` in `text` that verifies, in order of appearance (a report quotes the
/// return path in several headers: the same pair may come more than once).
pub fn find(secret: &[u8], text: &[u8]) -> Vec<(i64, i64)> {
    let mut found = Vec::new();
    for at in memchr::memchr_iter(b'+', text) {
        let rest = &text[at + 1..];
        let Some(len) = candidate(rest) else { continue };
        let Ok(tok) = std::str::from_utf8(&rest[..len]) else {
            continue;
        };
        if let Some(pair) = verify(secret, tok)
            && !found.contains(&pair)
        {
            found.push(pair);
        }
    }
    found
}

/// The length of `digits.digits.hex{20}` at the start of `s` when an `@` follows it.
fn candidate(s: &[u8]) -> Option<usize> {
    let digits = |from: usize| s[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    let a = digits(0);
    if a == 0 || a > 19 || s.get(a) != Some(&b'.') {
        return None;
    }
    let b = digits(a + 1);
    if b == 0 || b > 19 || s.get(a + 1 + b) != Some(&b'.') {
        return None;
    }
    let start = a + b + 2;
    let hex = s[start..]
        .iter()
        .take_while(|c| c.is_ascii_hexdigit())
        .count();
    (hex == MAC_HEX && s.get(start + hex) == Some(&b'@')).then_some(start + hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_tamper_and_find() {
        let t = token(b"k", 7, 42);
        assert_eq!(verify(b"k", &t), Some((7, 42)));
        assert_eq!(verify(b"k", &t.to_ascii_uppercase()), Some((7, 42)));
        assert_eq!(verify(b"other", &t), None);
        assert_eq!(verify(b"k", &t.replacen("7.", "8.", 1)), None);
        // An unsubscribe token for the same pair is no return path.
        let unsub = crate::auth::unsubscribe::token(b"k", 7, 42);
        assert_eq!(verify(b"k", &unsub), None);
        let rp = return_path("bounces@example.com", b"k", 7, 42);
        assert_eq!(rp, format!("bounces+{t}@example.com"));
        let text = format!(
            "To: <{rp}>\r\nX-Original-To: {}\r\n+1.2.3@x +.@",
            rp.to_uppercase()
        );
        assert_eq!(find(b"k", text.as_bytes()), vec![(7, 42)]);
        assert_eq!(find(b"other", text.as_bytes()), vec![]);
        for bad in [
            "",
            "7",
            "7.42",
            "7.42.",
            "x.y.z",
            "-1.2.00000000000000000000",
        ] {
            assert_eq!(verify(b"k", bad), None, "{bad}");
        }
    }
}
